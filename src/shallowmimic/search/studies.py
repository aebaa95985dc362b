"""Bayesian hyperparameter search on a shared Optuna study (Gaussian-process sampler by default,
the modern counterpart of the paper's Spearmint).

Any number of workers, on any machines that share the storage (SQLite for one machine,
PostgreSQL for many) and the run directory, cooperate on one study until it has exactly
`n_trials` completed trials. Workers send heartbeats; a worker that dies leaves a RUNNING trial
that the others mark FAIL once its heartbeat is stale, and the study still reaches its count.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import TrialState

from shallowmimic.core.errors import UserError
from shallowmimic.models.spaces import SAMPLERS, Param
from shallowmimic.search.attrs import FAIL_REASON, WORKER
from shallowmimic.search.jobs import reap, worker_id

# Heartbeats are "experimental" in Optuna since 2.9 yet stable in practice; say it once, here.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are logged by us, in one line


# Pending trials: GPSampler conditions on the RUNNING trials' parameters itself (Optuna >= 4.5);
# TPE needs its constant liar. So workers do not all chase one acquisition maximum.
_SAMPLER_MAKERS: dict[str, Callable[[int, int | None], optuna.samplers.BaseSampler]] = {
    "gp": lambda startup, seed: optuna.samplers.GPSampler(n_startup_trials=startup, seed=seed,
                                                          warn_independent_sampling=False),
    "tpe": lambda startup, seed: optuna.samplers.TPESampler(n_startup_trials=startup, seed=seed, constant_liar=True),
    "random": lambda startup, seed: optuna.samplers.RandomSampler(seed=seed),
}


def _base_sampler(kind: str, startup: int, seed: int | None) -> optuna.samplers.BaseSampler:
    if kind not in _SAMPLER_MAKERS:
        raise UserError(f"unknown sampler {kind!r} (known: {', '.join(SAMPLERS)})")
    return _SAMPLER_MAKERS[kind](startup, seed)


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed of trial `number` of a study seeded with `seed`."""
    digest = hashlib.sha256(f"{seed}:{number}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class TrialSeeded(optuna.samplers.BaseSampler):
    """A sampler made afresh before every trial, seeded from the study seed and the trial's
    number. The storage hands out trial numbers, so they are unique across all workers: no two
    workers share a random stream (two samplers with one seed on one study propose the very same
    points), and a study run by one worker is still reproducible from its seed."""

    def __init__(self, kind: str, startup: int, seed: int):
        self.kind, self.startup, self.seed = kind, startup, seed
        self.inner = _base_sampler(kind, startup, trial_seed(seed, -1))

    def before_trial(self, study, trial):
        self.inner = _base_sampler(self.kind, self.startup, trial_seed(self.seed, trial.number))
        self.inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values):
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:  # seeds come from trial numbers
        pass


def make_sampler(kind: str, startup: int = 10, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The study's sampler; with a seed, reseeded per trial (`TrialSeeded`)."""
    if kind not in SAMPLERS:
        raise UserError(f"unknown sampler {kind!r} (known: {', '.join(SAMPLERS)})")
    return TrialSeeded(kind, startup, seed) if seed is not None else _base_sampler(kind, startup, None)


def sampler_class(sampler: optuna.samplers.BaseSampler) -> str:
    return type(getattr(sampler, "inner", sampler)).__name__


def open_study(name: str, storage: optuna.storages.BaseStorage, sampler: str = "gp", startup: int = 10,
               seed: int | None = None) -> optuna.Study:
    """Create or join study `name`. The sampler is recorded in the study at creation; every
    worker that joins uses the recorded one, so a study never mixes samplers."""
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True,
                                sampler=make_sampler(sampler, startup, seed))
    attrs = study.user_attrs
    if "sampler" not in attrs:
        # "sampler" is written last: a worker joining between these writes (PostgreSQL does not
        # serialize them) sees either no record or a whole one
        study.set_user_attr("sampler_class", sampler_class(study.sampler))
        study.set_user_attr("sampler_seeding", "per trial: sha256(seed:trial number)")
        study.set_user_attr("n_startup_trials", startup)
        study.set_user_attr("objective", "validation error")
        study.set_user_attr("sampler", sampler)
    elif (attrs["sampler"], attrs.get("n_startup_trials")) != (sampler, startup):
        study.sampler = make_sampler(attrs["sampler"], attrs.get("n_startup_trials", startup), seed)
    return study


def suggest(trial: optuna.Trial, space: tuple[Param, ...]) -> dict:
    values = {}
    for p in space:
        if p.integer:
            values[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
        else:
            values[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
    return values


def counts(study: optuna.Study) -> dict[TrialState, int]:
    out = dict.fromkeys(TrialState, 0)
    for t in study.get_trials(deepcopy=False):
        out[t.state] += 1
    return out


class Surplus(Exception):
    """Two workers started the last trial at once; the later one stands down."""


def run_worker(study: optuna.Study, storage: optuna.storages.RDBStorage,
               objective: Callable[[optuna.Trial], float], n_trials: int,
               failures: tuple[type[BaseException], ...] = (), poll: float = 1.0,
               log: Callable[[str], None] = print, max_failed_in_a_row: int = 3,
               counts_toward_stop: Callable[[BaseException], bool] = lambda e: True,
               max_any_failed_in_a_row: int = 10, wait: bool = True) -> None:
    """Run trials of `study` (opened on `storage`) until it has `n_trials` completed ones
    (counting every worker's).

    While the quota is taken by trials still RUNNING elsewhere, wait: if their worker died
    (its heartbeat went stale, or its process is gone from this host: `jobs.reap`), the trial
    is failed and this worker takes over the slot. With `wait=False`, return instead (to take
    trials of another study meanwhile).
    A trial raising one of `failures` is failed (its reason kept) and the worker goes on,
    unless `max_failed_in_a_row` of its trials failed in a row with errors that
    `counts_toward_stop` (e.g. settings errors, not divergence), or `max_any_failed_in_a_row`
    with any errors: then it stops with an error."""
    streak: list[str] = []  # settings errors in a row
    any_streak: list[str] = []  # failures of any kind in a row

    def guarded(trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER, worker_id())
        active = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
                  if t.number < trial.number]
        if len(active) >= n_trials:
            trial.set_user_attr(FAIL_REASON, "surplus: the study already had enough trials")
            raise optuna.TrialPruned("surplus")
        try:
            value = objective(trial)
        except failures as e:
            trial.set_user_attr(FAIL_REASON, f"{type(e).__name__}: {e}")
            log(f"trial {trial.number} failed: {e}")
            any_streak.append(str(e))
            if counts_toward_stop(e):
                streak.append(str(e))
            raise
        streak.clear()
        any_streak.clear()
        return value

    while True:
        # Not only Optuna's stale heartbeats: a worker killed before its first heartbeat landed
        # leaves a RUNNING trial that would never go stale, and the study would wait forever.
        reap(study, storage)
        c = counts(study)
        if c[TrialState.COMPLETE] >= n_trials:
            return
        if c[TrialState.COMPLETE] + c[TrialState.RUNNING] >= n_trials:
            if not wait:
                return
            time.sleep(poll)  # others hold the remaining slots; wait for them (or their stale heartbeat)
            continue
        study.optimize(guarded, n_trials=1, catch=failures)
        for failed, limit in ((streak, max_failed_in_a_row), (any_streak, max_any_failed_in_a_row)):
            if len(failed) >= limit:
                raise UserError(f"study {study.study_name}: {len(failed)} trials in a row failed "
                                f"(last: {failed[-1]}); check the study's settings")


def best_trials(study: optuna.Study, k: int) -> list[optuna.trial.FrozenTrial]:
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return sorted(done, key=lambda t: (t.value, t.number))[:k]


def trial_dir(run_dir: Path, study_name: str, number: int) -> Path:
    return Path(run_dir) / "trials" / study_name / f"trial_{number:04d}"
