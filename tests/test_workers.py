"""Issue 10: several `shallowmimic run` processes on one study divide its jobs (each trained
exactly once), survive a killed worker, and end with the report of a single-process run."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from shallowmimic.core.layout import queue_name, read_study_id
from shallowmimic.search.storage import with_driver

from .test_search import storage_for

# The smoke study on tiny synthetic data: 2 teachers, the ensemble, the transfer set (2 shards and
# its manifest), 6 students (mlp1, conv1, conv2 mimic and their hard-label twins), the inference
# stage (9 exports, one per model, then the timing): 22 jobs.
SETS = ["data.val_size=200", "data.train_limit=0", "data.val_limit=0", "teachers.epochs=1", "transfer.epochs=2",
        "students.epochs=2", "search.heartbeat=2"]
N_JOBS = 22


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    import numpy as np

    from .conftest import tiny_arrays

    path = tmp_path_factory.mktemp("data") / "d.npz"
    np.savez(path, **tiny_arrays(n_train=700, n_test=100, size=32))
    return path


def start(data, out, *sets, log: Path | None = None, cwd: Path | None = None):
    args = ["run", "--preset", "smoke", "--out", str(out), "--data", str(data), "--device", "cpu", "--no-progress"]
    args += [a for s in (*SETS, *sets) for a in ("--set", s)]
    log = log or Path(out).with_name(Path(out).name + f"-{time.monotonic_ns()}.log")
    env = {**os.environ, "SHALLOWMIMIC_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "shallowmimic", *args], stdout=open(log, "w"),  # noqa: SIM115
                            stderr=subprocess.STDOUT, env=env, cwd=cwd), log


def finish(proc_log, timeout=600):
    proc, log = proc_log
    assert proc.wait(timeout) == 0, log.read_text()[-3000:]
    return log.read_text()


def results(out) -> list[dict]:
    """The report's rows without the columns that name directories."""
    with open(Path(out) / "report" / "results.csv") as f:
        rows = [{k: v for k, v in r.items() if "dir" not in k and k not in ("path", "wall_s")}
                for r in csv.DictReader(f)]
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))


def findings(out) -> list[str]:
    text = (Path(out) / "report" / "report.md").read_text()
    return [line for line in text.splitlines() if line.startswith(("- **PASS", "- **FAIL", "- **INCONCLUSIVE"))]


def queue(out, storage=None):
    url = storage or f"sqlite:///{(Path(out) / 'studies.db').resolve()}"
    return optuna.load_study(study_name=queue_name(read_study_id(out)), storage=with_driver(url))


def assert_each_job_done_once(out, storage=None):
    worked = [t for t in queue(out, storage).get_trials(states=(TrialState.COMPLETE,)) if t.user_attrs.get("worked")]
    keys = [t.user_attrs["job"].rsplit("#", 1)[0] for t in worked]
    assert len(keys) == len(set(keys)) == N_JOBS, sorted(keys)
    return {t.user_attrs["worker"] for t in worked}


@pytest.fixture(scope="module")
def single(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "study"
    finish(start(data, out))
    return out


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_three_workers_train_every_job_once_and_match_a_single_run(data, single, tmp_path, kind):
    out = tmp_path / "study"
    storage = None if kind == "sqlite" else storage_for("postgres", tmp_path)
    extra = [f'search.storage="{storage}"'] if storage else []
    procs = [start(data, out, *extra, log=tmp_path / f"w{k}.log") for k in range(3)]
    for p in procs:
        finish(p)
    workers = assert_each_job_done_once(out, storage)
    assert len(workers) >= 2  # the work was shared
    assert results(out) == results(single)
    assert findings(out) == findings(single)
    per_worker = json.loads((out / "run.json").read_text())["jobs_per_worker"]
    assert sum(per_worker.values()) == N_JOBS


def test_workers_through_other_paths_to_the_study_and_the_data_divide_its_jobs(data, single, tmp_path):
    """Issue 21 item 1: the queue was named after the study directory's path and every job's key
    held the data's path as typed, so a worker through a symbolic link to the study, given the
    same data at another place by a relative path, trained the whole study a second time."""
    out, link, mount = tmp_path / "study", tmp_path / "link", tmp_path / "mount"
    out.mkdir()
    mount.mkdir()
    link.symlink_to(out, target_is_directory=True)
    shutil.copy(data, mount / "d.npz")
    procs = [start(data, out, log=tmp_path / "a.log"), start("d.npz", link, log=tmp_path / "b.log", cwd=mount)]
    for p in procs:
        finish(p)
    assert len(assert_each_job_done_once(out)) == 2  # both worked, and no job twice
    assert results(out) == results(single)


def running_students(out, pid: int) -> list:
    """The student jobs the worker `pid` holds, or [] while the queue is not there yet."""
    try:
        trials = queue(out).get_trials(states=(TrialState.RUNNING,))
    except Exception:  # noqa: BLE001 (the study directory, database or queue is not there yet)
        return []
    return [t for t in trials if t.user_attrs.get("job", "").startswith("students/")
            and t.user_attrs.get("worker", "").endswith(f":{pid}")]


def test_a_killed_worker_leaves_its_job_to_the_others(data, single, tmp_path):
    out = tmp_path / "study"
    victim, log = start(data, out, log=tmp_path / "victim.log")
    deadline = time.time() + 300
    running = []
    while not running:  # wait until the victim is mid-way through a student
        assert victim.poll() is None and time.time() < deadline, log.read_text()
        time.sleep(0.1)
        if running_students(out, victim.pid):
            # Frozen, the victim cannot finish the student between our look and the kill.
            victim.send_signal(signal.SIGSTOP)
            running = running_students(out, victim.pid)
            if not running:
                victim.send_signal(signal.SIGCONT)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    for p in [start(data, out, log=tmp_path / f"w{k}.log") for k in range(2)]:
        finish(p)
    states = {t.number: t.state for t in queue(out).get_trials()}
    assert all(states[t.number] == TrialState.FAIL for t in running)  # its stale claim expired
    assert_each_job_done_once(out)
    assert results(out) == results(single)


def test_workers_flag_starts_local_workers(data, single, tmp_path):
    out = tmp_path / "study"
    args = ["run", "--preset", "smoke", "--out", str(out), "--data", str(data), "--device", "cpu", "--workers", "2"]
    args += [a for s in SETS for a in ("--set", s)]
    r = subprocess.run([sys.executable, "-m", "shallowmimic", *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "worker 1:" in r.stdout and "jobs per worker:" in r.stdout
    logs = [(out / "workers" / f"worker-{k}.log").read_text() for k in (0, 1)]
    assert "report: " in logs[0] and "left to another worker" in logs[1]  # one report, by worker 0
    assert "report: " not in logs[1] and (out / "report" / "report.md").exists()
    assert_each_job_done_once(out)
    assert results(out) == results(single)
