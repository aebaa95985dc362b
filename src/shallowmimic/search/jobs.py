"""Fixed jobs (a teacher, the ensemble, a transfer-set shard and the manifest, a student, a
model's ONNX export, the timing of every model) shared by cooperating workers through an
Optuna study, the engine the searches already use.

Every `shallowmimic run` on one study directory is a worker. Each job is one trial of the
study's job queue (an Optuna study in the study's storage), enqueued WAITING with its key in
`user_attrs["job"]`. `study.optimize(n_trials=1)` pops exactly one WAITING trial (Optuna moves
it to RUNNING under a row lock in PostgreSQL, inside a BEGIN IMMEDIATE transaction in SQLite:
see `search.make_storage`), so no two workers take the same job, and runs it with Optuna's
heartbeat. A worker killed mid-job leaves a RUNNING trial that `reap` fails (its heartbeat
went stale, or its process is gone from this host), the key is enqueued again, and the job's
next worker resumes the checkpoint in the job's directory. A job that raises (a diverged
teacher) stops the workers waiting for it with its error instead of being retried by each.

Several workers may enqueue the same key at once (each enqueues what it does not see); the
duplicate is popped later and dropped (pruned) since its key is already taken or done.
A key carries a generation (`teachers/t00-...#0`): a job marked done in the queue whose
directory has no result any more (deleted to be retrained) is enqueued again as `#1`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

import optuna
from optuna.trial import TrialState

from shallowmimic.core.errors import UserError
from shallowmimic.search.attrs import ERROR, JOB, WORKED, WORKER


class NothingToTake(optuna.TrialPruned):
    """The popped trial is a duplicate, or no job was waiting (optimize made a fresh trial)."""


class ShareableJob(Protocol):
    """A job is its key (unique within the queue, the same in every worker) and whether it is done."""

    @property
    def key(self) -> str: ...

    def done(self) -> bool: ...


def host_id() -> str:
    """Where a pid means this process table: the host name, plus the pid namespace where there
    is one (containers may share a host name, each with its own pids)."""
    try:
        return f"{os.uname().nodename}/pidns{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return os.uname().nodename


def worker_id() -> str:
    return f"{host_id()}:{os.getpid()}"


def open_queue(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study:
    for attempt in range(5):
        try:
            return optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                       sampler=optuna.samplers.RandomSampler(seed=0))
        except optuna.exceptions.DuplicatedStudyError:  # created by another worker just now
            time.sleep(0.2 * (attempt + 1))
    return optuna.load_study(study_name=name, storage=storage)


def job_states(study: optuna.Study) -> dict[str, set[TrialState]]:
    states: dict[str, set[TrialState]] = {}
    for t in study.get_trials(deepcopy=False):
        if JOB in t.user_attrs:
            states.setdefault(t.user_attrs[JOB], set()).add(t.state)
    return states


def submit(study: optuna.Study, keys: Sequence[str]) -> None:
    """Enqueue every key that is neither waiting, running nor done (new keys, and jobs whose
    worker died), in order: workers take them first come."""
    states = job_states(study)
    for key in keys:
        if not states.get(key, set()) & {TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE}:
            study.enqueue_trial({}, user_attrs={JOB: key}, skip_if_exists=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _grace(storage: optuna.storages.RDBStorage) -> float:
    """Seconds after which a silent worker counts as dead: the storage's grace period (Optuna's
    default where none is set: twice the heartbeat interval)."""
    return storage.grace_period or 2 * (storage.heartbeat_interval or 60)


# RUNNING trials of other hosts this process has given a heartbeat of its own (see `reap`).
_vouched: set[tuple[str, str, int]] = set()


def reap(study: optuna.Study, storage: optuna.storages.RDBStorage) -> None:
    """Fail the RUNNING trials (jobs, and search trials: `search.run_worker`) whose worker is
    gone, so that their job is enqueued again or their slot taken: a stale heartbeat (Optuna's
    check), a worker process on this host (and pid namespace) that no longer exists (no need to
    wait for its heartbeat to go stale), and a trial popped by a worker killed before it named
    itself.

    A worker on another host killed between its claim and its first heartbeat leaves a trial
    that Optuna never calls stale (it has no heartbeat to age). So each reaper records one
    heartbeat, once, for every RUNNING trial of another host it sees: a live owner's own
    heartbeats carry on over it, a dead owner's trial goes stale one grace period later and is
    failed by any worker. The database's clock times it, so hosts' clocks need not agree.
    (`storage` is the one `study` was opened on: Optuna's study does not show it.)"""
    optuna.storages.fail_stale_trials(study)
    grace, host, now = _grace(storage), host_id(), datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get(WORKER)
        if worker is None:
            gone = t.datetime_start is not None and (now - t.datetime_start).total_seconds() > grace
        else:
            where, _, pid = worker.rpartition(":")
            gone = where == host and pid.isdigit() and not _alive(int(pid))
            mark = (storage.url, study.study_name, t.number)
            if where != host and mark not in _vouched and storage.heartbeat_interval:
                study_id = storage.get_study_id_from_name(study.study_name)
                storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, t.number))
                _vouched.add(mark)
        if gone:
            try:  # finished or failed by someone else meanwhile: nothing to do
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
                pass


def _failed_elsewhere(study: optuna.Study, keys: Sequence[str], since: datetime) -> str | None:
    """The error of a job of `keys` that raised in another worker after `since`: it would raise
    here too (a diverged teacher), so this worker stops instead of repeating it. (`since` is a
    grace period before this worker started, so that workers started together count as one
    attempt; a job that raised longer ago is tried again: a re-run after a fix.)"""
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.user_attrs.get(JOB) in keys and ERROR in t.user_attrs and t.datetime_complete and \
                t.datetime_complete >= since:
            return f"{t.user_attrs[JOB]} failed in worker {t.user_attrs.get(WORKER)}: {t.user_attrs[ERROR]}"
    return None


def _claimed_job(study: optuna.Study, trial: optuna.Trial, wanted: set[str], since: datetime) -> str:
    """The job key of the trial this worker popped, if the job is its to do: not a fresh trial
    (nothing was waiting), not another stage's, not a duplicate of one taken or done, and not
    a job that failed in another worker meanwhile (that is an error here too)."""
    key = trial.user_attrs.get(JOB)
    if key is None:
        raise NothingToTake("no job was waiting")
    if key not in wanted:  # another stage's job, enqueued while this worker looked: its stage re-enqueues it
        raise NothingToTake(f"job {key} belongs to another stage")
    if any(t.user_attrs.get(JOB) == key and t.number != trial.number
           for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))):
        raise NothingToTake(f"job {key} is already taken")
    error = _failed_elsewhere(study, [key], since)  # it failed between our last look and this pop
    if error:
        raise UserError(error)
    return key


def run_jobs(study: optuna.Study, storage: optuna.storages.RDBStorage, keys: Sequence[str],
             work: Callable[[str], bool], poll: float = 1.0, log: Callable[[str], None] = print) -> list[str]:
    """Take and do jobs of `keys` until every one is done by some worker; return the keys this
    worker took. `work` returns whether it did anything (a job found already done on disk did
    not). A job raising an exception is failed and the exception propagates (a teacher that
    diverges stops the study), and stops the other workers waiting for it; a job meant to be
    skipped for good must mark itself done."""
    wanted, since = set(keys), datetime.now() - timedelta(seconds=_grace(storage))
    submit(study, keys)
    mine: list[str] = []
    waiting_for: set[str] = set()
    claim: dict = {}  # the trial this worker popped, and whether its work returned

    def objective(trial: optuna.Trial) -> float:
        claim["number"] = trial.number
        trial.set_user_attr(WORKER, worker_id())
        key = _claimed_job(study, trial, wanted, since)
        try:
            worked = work(key)
        except Exception as e:
            claim["error"] = e  # Optuna may mask it (our claim failed meanwhile): raised as itself below
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                trial.set_user_attr(ERROR, f"{type(e).__name__}: {e}"[:1000])
            raise
        claim["returned"] = True
        if worked:
            trial.set_user_attr(WORKED, True)  # raises if our claim was failed meanwhile: `_taken_over`
        mine.append(key)
        return 0.0

    while True:
        reap(study, storage)
        states = job_states(study)
        if all(TrialState.COMPLETE in states.get(k, set()) for k in keys):
            return mine
        error = _failed_elsewhere(study, keys, since)
        if error:
            raise UserError(error)
        submit(study, keys)
        states = job_states(study)
        if not any(TrialState.WAITING in states.get(k, set()) for k in keys):
            running = {k for k in keys if TrialState.RUNNING in states.get(k, set())} - waiting_for
            if running:
                log(f"waiting for {', '.join(sorted(running))} (running in another worker)")
                waiting_for |= running
            time.sleep(poll)  # every remaining job is running elsewhere: wait for it (or its stale heartbeat)
            continue
        claim.clear()
        try:
            study.optimize(objective, n_trials=1, catch=())
        except ValueError:
            if "error" in claim:  # the job's own error, whether or not its claim was taken over meanwhile
                raise claim["error"] from None
            if not _taken_over(study, claim):
                raise
            # our claim was failed as stale while we worked (a starved heartbeat); its next taker finishes it
            log(f"a job of this worker (trial {claim['number']}) was taken over by another")


def _taken_over(study: optuna.Study, claim: dict) -> bool:
    """Whether the trial this worker popped was failed by another worker's reaper while its work
    ran to the end (Optuna then refuses to complete it)."""
    if not claim.get("returned"):
        return False
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    return any(t.number == claim["number"] for t in failed)


class JobQueue:
    """The study's job queue. `share(jobs, work)` returns once every job is done, each by
    exactly one of the workers sharing the queue; a job already done on disk is not redone."""

    def __init__(self, study: optuna.Study, storage: optuna.storages.RDBStorage, poll: float = 1.0,
                 log: Callable[[str], None] = print):
        self.study, self.storage, self.poll, self.log = study, storage, poll, log

    def keys(self, jobs: Sequence[ShareableJob]) -> list[str]:
        states = job_states(self.study)
        keys = []
        for job in jobs:
            n = 0
            while TrialState.COMPLETE in states.get(f"{job.key}#{n}", set()) and not job.done():
                n += 1
            keys.append(f"{job.key}#{n}")
        return keys

    def share(self, jobs: Sequence[ShareableJob], work: Callable[[ShareableJob], None]) -> None:
        jobs = list(jobs)
        if not jobs:
            return
        keys = self.keys(jobs)
        by_key = dict(zip(keys, jobs, strict=True))

        def do(key: str) -> bool:
            job = by_key[key]
            if job.done():
                return False
            work(job)
            return True

        run_jobs(self.study, self.storage, keys, do, poll=self.poll, log=self.log)

    def jobs_per_worker(self) -> dict[str, int]:
        """How many jobs each worker has done (jobs found already done on disk not counted)."""
        return dict(Counter(t.user_attrs[WORKER] for t in self.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE,)) if t.user_attrs.get(WORKED)))
