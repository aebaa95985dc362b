"""The hyperparameter search: spaces, samplers, shared studies with several worker processes."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
import sqlalchemy
import torch
from optuna.trial import TrialState

from shallowmimic.core.errors import UserError
from shallowmimic.data.sources import load_dataset
from shallowmimic.data.split import SplitConfig
from shallowmimic.models import spaces
from shallowmimic.search.storage import make_storage, storage_url, with_driver
from shallowmimic.search.studies import open_study, run_worker
from shallowmimic.study import tuning
from shallowmimic.training.loop import Diverged

from .conftest import tiny_arrays

PAPER_TEACHER_BOUNDS = {
    "lr": (0.01, 0.05, True), "momentum": (0.80, 0.91, True), "weight_decay": (5e-5, 4e-4, False),
    "init_scale": (0.8, 1.35, False), "input_scale": (0.8, 1.25, False),
    "dropout_c1": (0.1, 0.3, False), "dropout_c2": (0.25, 0.35, False), "dropout_c3": (0.3, 0.44, False),
    "dropout_fc": (0.2, 0.65, False), "scale_c1": (0, 1, False), "scale_c2": (0, 1, False),
    "scale_c3": (0, 1, False), "scale_h": (0, 1, False), "hsv_dh": (0.03, 0.11, False),
    "hsv_ds": (0.2, 0.3, False), "hsv_dv": (0.0, 0.2, False), "hsv_as": (0.2, 0.3, False),
    "hsv_av": (0.03, 0.2, False),
}

POSTGRES_ENV = "SHALLOWMIMIC_TEST_POSTGRES"


def test_teacher_space_has_the_papers_18_parameters():
    space = {p.name: (p.low, p.high, p.log) for p in spaces.TEACHER_SPACE}
    assert len(spaces.TEACHER_SPACE) == 18
    assert space == PAPER_TEACHER_BOUNDS


def test_student_space_per_family_and_budget():
    from shallowmimic.models.students import get_student

    s = {p.name: p for p in spaces.student_space(get_student("conv2"), 10_000_000)}
    assert (s["lr"].low, s["lr"].high, s["lr"].log) == (0.0013, 0.016, True)
    assert (s["momentum"].low, s["momentum"].high, s["momentum"].log) == (0.68, 0.97, True)
    assert (s["conv1"].low, s["conv1"].high, s["conv1"].integer) == (50, 350, True)
    r = {p.name: p for p in spaces.student_space(get_student("mlp3"), 1_000_000)}
    assert [n for n in r if n.startswith("ratio")] == ["ratio1", "ratio2", "ratio3"] and not r["ratio1"].integer


def test_recorded_sampler_is_the_gp_sampler(tmp_path):
    storage = make_storage(storage_url(None, tmp_path), heartbeat=5)
    study = open_study("s", storage, "gp", startup=3)
    assert isinstance(study.sampler, optuna.samplers.GPSampler)
    again = optuna.load_study(study_name="s", storage=storage)
    assert again.user_attrs["sampler_class"] == "GPSampler" and again.user_attrs["n_startup_trials"] == 3
    joined = open_study("s", storage, "random", startup=1)  # a worker asking for another sampler
    assert isinstance(joined.sampler, optuna.samplers.GPSampler)


def test_diverging_trial_fails_with_reason_and_study_continues(tmp_path, monkeypatch):
    np.savez(tmp_path / "d.npz", **tiny_arrays(n_train=200, n_test=20, size=8, classes=3))
    ds = load_dataset(tmp_path / "d.npz")
    absurd = tuple(spaces.Param("lr", 0.01, 1e4, log=True) if p.name == "lr" else p for p in spaces.TEACHER_SPACE)
    monkeypatch.setattr(tuning, "TEACHER_SPACE", absurd)
    search = tuning.SearchConfig(trials=2, sampler="random", heartbeat=5)
    study, _ = tuning._open(search, tmp_path / "run", tuning.teacher_study_name(2))
    study.enqueue_trial({"lr": 1e4})
    study.enqueue_trial({"lr": 0.02})
    study.enqueue_trial({"lr": 0.02})
    tuning.tune_teachers(ds, tmp_path / "run", search, 2, torch.device("cpu"), SplitConfig(val_size=40),
                         log=lambda s: None)
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL and "diverged" in trials[0].user_attrs["fail_reason"]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2


def test_run_worker_stops_at_exactly_n(tmp_path):
    storage = make_storage(storage_url(None, tmp_path), heartbeat=5)
    study = open_study("q", storage, "random")
    calls = []

    def objective(trial):
        calls.append(trial.number)
        if trial.number == 1:
            raise Diverged("boom")
        return trial.suggest_float("x", 0, 1)

    run_worker(study, storage, objective, 3, (Diverged,), log=lambda s: None)
    states = [t.state for t in study.get_trials()]
    assert states.count(TrialState.COMPLETE) == 3 and states.count(TrialState.FAIL) == 1


def test_a_worker_can_leave_a_study_whose_last_trials_run_elsewhere(tmp_path):
    """Issue 10: with `wait=False` a worker moves on to the next study instead of idling."""
    storage = make_storage(storage_url(None, tmp_path), heartbeat=5)
    study = open_study("q", storage, "random")
    elsewhere = study.ask()  # another worker's trial, still running
    run_worker(study, storage, lambda t: t.suggest_float("x", 0, 1), 2, (), log=lambda s: None, wait=False)
    states = [t.state for t in study.get_trials()]
    assert states.count(TrialState.COMPLETE) == 1 and states.count(TrialState.RUNNING) == 1
    study.tell(elsewhere, 0.5)
    run_worker(study, storage, lambda t: 1 / 0, 2, (), log=lambda s: None)  # the quota is met: nothing runs
    assert [t.state for t in study.get_trials()].count(TrialState.COMPLETE) == 2


# --- several worker processes on one study ----------------------------------------------------


@pytest.fixture
def tiny_npz(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, **tiny_arrays(n_train=400, n_test=20, size=8, classes=3))
    return path


def worker(data, out, storage, trials, epochs=2):
    cmd = [sys.executable, "-m", "shallowmimic", "tune", "teacher", "--data", str(data), "--out", str(out),
           "--trials", str(trials), "--epochs", str(epochs), "--val-size", "40", "--device", "cpu",
           "--startup", "2", "--heartbeat", "1", "--storage", storage]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)


def finish(proc, timeout=300):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"worker still running after {timeout} s:\n{out[-3000:]}") from None
    assert proc.returncode == 0, out
    return out


def check_study(storage, out, n):
    study = optuna.load_study(study_name=tuning.teacher_study_name(2), storage=with_driver(storage))
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(done) == n
    assert len({t.number for t in done}) == n
    for t in done:
        d = t.user_attrs["dir"]
        assert d.startswith(str(out))
        for f in ("result.json", "best.safetensors", "model.json", "metrics.jsonl"):
            assert os.path.exists(os.path.join(d, f)), (t.number, f)
    return study


def storage_for(kind, tmp_path):
    if kind == "sqlite":
        return storage_url(None, tmp_path / "run")
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"CI run without PostgreSQL: {POSTGRES_ENV} is not set")
        pytest.skip(f"set {POSTGRES_ENV} to a PostgreSQL URL to run this test")
    name = f"t{os.getpid()}_{int(time.time() * 1000)}"
    engine = sqlalchemy.create_engine(with_driver(url), isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return url.rsplit("/", 1)[0] + "/" + name


def test_the_documented_postgres_url_gets_the_installed_driver(monkeypatch):
    """Issue 21 item 6: `postgresql://user@host/db` failed where SQLAlchemy's default driver for
    the bare form (psycopg 3 since 2.1) was not the one installed (psycopg2)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m: None if m == "psycopg" else real(m))
    assert with_driver("postgresql://u@h:5432/db") == "postgresql+psycopg2://u@h:5432/db"
    assert with_driver("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    for url in ("postgresql+psycopg2://u@h/db", "sqlite:///x.db", "mysql://u@h/db"):
        assert with_driver(url) == url
    monkeypatch.setattr(importlib.util, "find_spec", lambda m: None)
    with pytest.raises(UserError, match=r"pip install 'shallowmimic\[postgres\]'"):
        with_driver("postgresql://u@h/db")
    if os.environ.get(POSTGRES_ENV):  # CI gives the bare form: it must reach the server
        assert os.environ[POSTGRES_ENV].startswith("postgresql://")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_two_workers_share_one_study(tmp_path, tiny_npz, kind):
    storage = storage_for(kind, tmp_path)
    out = tmp_path / "run"
    a, b = worker(tiny_npz, out, storage, 5), worker(tiny_npz, out, storage, 5)
    logs = finish(a) + finish(b)
    study = check_study(storage, out, 5)
    assert study.user_attrs["sampler_class"] == "GPSampler"
    workers = {t.user_attrs["worker"] for t in study.get_trials() if t.state == TrialState.COMPLETE}
    assert len(workers) == 2, logs  # both did real work


def test_killed_worker_trial_is_failed_and_study_completes(tmp_path, tiny_npz):
    storage = storage_for("sqlite", tmp_path)
    out = tmp_path / "run"
    victim = worker(tiny_npz, out, storage, 4, epochs=6)
    deadline = time.time() + 120
    victim_trial = None
    def victims_trial():
        # A victim stopped mid-transaction holds SQLite's lock, so the probe gives up fast
        # ("database is locked") and closes its connection, never leaving one to block the survivor.
        probe = None
        try:
            probe = optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": {"timeout": 1}})
            study = optuna.load_study(study_name=tuning.teacher_study_name(6), storage=probe)
            running = [t for t in study.get_trials() if t.state == TrialState.RUNNING
                       and t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]
            return running[0].number if running else None
        except (KeyError, optuna.exceptions.StorageInternalError, ValueError, sqlalchemy.exc.OperationalError):
            return None
        finally:
            if probe is not None:
                probe.engine.dispose()

    while victim_trial is None and time.time() < deadline:  # wait until the victim is mid-trial
        if victims_trial() is not None:
            victim.send_signal(signal.SIGSTOP)  # frozen, it cannot finish the trial before the kill
            victim_trial = victims_trial()
            if victim_trial is None:
                victim.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    assert victim_trial is not None, "the victim never started a trial"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    survivor = worker(tiny_npz, out, storage, 4, epochs=6)
    finish(survivor)
    study = optuna.load_study(study_name=tuning.teacher_study_name(6), storage=with_driver(storage))
    states = {t.number: t.state for t in study.get_trials()}
    assert states[victim_trial] == TrialState.FAIL
    assert list(states.values()).count(TrialState.COMPLETE) == 4


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_taken_over(tmp_path):
    """A worker killed between claiming a trial and its first heartbeat leaves a RUNNING trial
    with no heartbeat, which Optuna never calls stale: the next worker must still fail it and
    run the slot itself (this hung the killed-worker test one time in five under load)."""
    from shallowmimic.search.jobs import host_id

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    storage = make_storage(storage_url(None, tmp_path), heartbeat=1)
    study = open_study("h", storage, "random")
    orphan = study.ask()  # no heartbeat was ever recorded for it
    orphan.set_user_attr("worker", f"{host_id()}:{dead.pid}")
    time.sleep(2.5)  # past the grace period, so Optuna's own check has had its chance
    optuna.storages.fail_stale_trials(study)
    assert study.get_trials()[0].state == TrialState.RUNNING  # the gap: Optuna leaves it RUNNING
    run_worker(study, storage, lambda t: t.suggest_float("x", 0, 1), 1, wait=False, log=lambda s: None)
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.COMPLETE]


def test_user_error_in_a_trial_fails_it_and_repeated_failures_stop_the_worker(tmp_path):
    """Issue 9 item 5: a trial's own bad parameters fail that trial; a study whose every trial
    fails stops with an error instead of looping."""
    from shallowmimic.core.errors import UserError

    storage = make_storage(storage_url(None, tmp_path), heartbeat=5)
    study = open_study("u", storage, "random")

    def objective(trial):
        if trial.suggest_float("x", 0, 1) >= 0 and trial.number == 0:
            raise UserError("these widths cannot meet the budget")
        return 0.5

    run_worker(study, storage, objective, 2, tuning.FAILURES, log=lambda s: None)
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert "budget" in study.get_trials()[0].user_attrs["fail_reason"]

    always = open_study("v", storage, "random")
    with pytest.raises(UserError, match="3 trials in a row failed"):
        run_worker(always, storage, lambda t: (_ for _ in ()).throw(UserError("bad setting")), 5, tuning.FAILURES,
                   log=lambda s: None)
    assert len(always.get_trials()) == 3
    # divergence belongs to the sampled point (a high lr): it fails trials without stopping early
    diverging = open_study("w", storage, "random")
    with pytest.raises(UserError, match="10 trials in a row failed"):
        run_worker(diverging, storage, lambda t: (_ for _ in ()).throw(Diverged("loss nan")), 5, tuning.FAILURES,
                   log=lambda s: None, counts_toward_stop=tuning._settings_error)
    assert len(diverging.get_trials()) == 10


@pytest.mark.parametrize("field, value", [("trials", 0), ("startup", -1), ("heartbeat", 0), ("sampler", "grid")])
def test_search_config_is_validated(field, value):
    """Issue 9 item 9: `tune ... --trials 0` must not exit 0 having done nothing."""
    from shallowmimic.core.errors import UserError

    with pytest.raises(UserError, match=field if field != "trials" else "trials must be at least 1"):
        tuning.SearchConfig(**{field: value})


@pytest.mark.parametrize("kind", ["random", "tpe", "gp"])
def test_two_workers_with_one_seed_propose_no_duplicates(tmp_path, kind):
    """Issue 10 item 1: workers of one study, started with the same search seed, must not
    propose the same parameters (two samplers seeded alike used to, trial after trial); while a
    single worker stays reproducible from the seed."""
    storage = make_storage(storage_url(None, tmp_path), heartbeat=5)
    a, b = (open_study("dup", storage, kind, startup=3, seed=0) for _ in range(2))
    proposals = []
    for _ in range(4):  # interleaved: each asks while the other's trial is still running
        ta, tb = a.ask(), b.ask()
        for study, t in ((a, ta), (b, tb)):
            x, y = t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)
            proposals.append((x, y))
            study.tell(t, (x - 0.3) ** 2 + (y - 0.6) ** 2)
    assert len(set(proposals)) == len(proposals)

    def alone(name):
        s = open_study(name, make_storage(storage_url(None, tmp_path / name), heartbeat=5), kind, startup=3, seed=0)
        s.optimize(lambda t: t.suggest_float("x", 0, 1) ** 2, n_trials=5)
        return [t.params["x"] for t in s.trials]

    assert alone("r1") == alone("r2")


def test_every_named_sampler_is_built_and_no_other():
    """Issue 22 item 3: the config's sampler names (models.SAMPLERS, known without Optuna) and
    the samplers the search builds are one list."""
    from shallowmimic.models.spaces import SAMPLERS
    from shallowmimic.search import studies

    assert tuple(studies._SAMPLER_MAKERS) == SAMPLERS
    for kind in SAMPLERS:
        assert isinstance(studies.make_sampler(kind, 3, 0).inner, optuna.samplers.BaseSampler)
