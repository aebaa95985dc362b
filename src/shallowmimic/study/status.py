"""Where a study is: per stage, jobs done of total; each worker's current job and epoch; the
counted FLOPs done, elapsed time and an ETA. Read from the study directory alone (its plan.json,
the files that mark jobs done, each training's progress.json) and its job queue, so that
`shallowmimic status DIR` works from another shell, for a running or a finished study,
without joining it as a worker. `run --workers N` shows the same view while it waits.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from shallowmimic.core.errors import UserError
from shallowmimic.core.layout import (
    DEFAULT_DB,
    ENSEMBLE_JSON,
    INFERENCE_NOTES,
    METRICS,
    PLAN_JSON,
    PROGRESS,
    RESULT_JSON,
    RUN_JSON,
    SEARCH_JSON,
    TRANSFER_MANIFEST,
    queue_name,
    read_study_id,
)


@dataclass(frozen=True)
class Running:
    worker: str
    job: str
    stage: str
    where: str  # "epoch 3/8, step 40/125", or "" for a job without epochs


@dataclass(frozen=True)
class Status:
    name: str
    out: Path
    stages: dict[str, tuple[int, int]]  # stage -> (done, total)
    flops_total: float
    flops_done: float  # finished jobs, plus the finished epochs and steps of running ones
    elapsed_s: float  # since the latest run of the study started
    eta_s: float | None
    running: tuple[Running, ...] = field(default=())
    finished: bool = False
    report: Path | None = None

    def lines(self) -> list[str]:
        done = sum(d for d, _ in self.stages.values())
        total = sum(t for _, t in self.stages.values())
        share = 100 * self.flops_done / self.flops_total if self.flops_total else 100.0
        head = (f"study '{self.name}' in {self.out}: {done}/{total} jobs, {self.flops_done / 1e12:,.1f} of "
                f"{self.flops_total / 1e12:,.1f} TFLOP done ({share:.0f}%); ")
        if self.finished:
            head += "finished" + (f"; report: {self.report}" if self.report else "")
        else:
            eta = "unknown yet" if self.eta_s is None else _clock(self.eta_s)
            head += f"elapsed {_clock(self.elapsed_s)}, ETA {eta}"
        out = [head]
        for stage, (d, t) in self.stages.items():
            busy = sum(r.stage == stage for r in self.running)
            out.append(f"  {stage:<13} {d:>3}/{t:<3}" + (f"  {busy} running" if busy else ""))
        out += [f"  worker {r.worker}: {r.job}" + (f", {r.where}" if r.where else "") for r in self.running]
        return out


def _short(worker: str) -> str:
    host, _, pid = worker.rpartition(":")
    return f"{host.split('/pidns')[0]}:{pid}" if pid else worker  # the pid namespace is for reaping only


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def read_plan(out: Path) -> dict:
    path = Path(out) / PLAN_JSON
    if not path.exists():
        raise UserError(f"{out}: not a study directory, or one whose run has not started yet (no {PLAN_JSON}; "
                        "`shallowmimic run --out DIR` writes it as it starts)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not a readable plan ({e})") from e


def _done(out: Path, job: dict, started: float) -> bool:
    """A marker exists; the run record counts only when written by this run (after `started`)."""
    for m in job["markers"]:
        path = out / m
        if m == RUN_JSON:
            if path.exists() and path.stat().st_mtime >= started:
                return True
        elif path.exists():
            return True
    return False


DIR_MARKERS = (RESULT_JSON, ENSEMBLE_JSON, TRANSFER_MANIFEST, SEARCH_JSON, INFERENCE_NOTES)


def _progress(out: Path, job: dict) -> tuple[float, str]:
    """Share of a job's training done (0..1) and where it is, from its directory's files."""
    if not job.get("epochs") or not job["markers"]:
        return 0.0, ""
    return _where((out / job["markers"][0]).parent, job["epochs"])


def _where(d: Path, epochs: int) -> tuple[float, str]:
    """From a training directory: its progress.json (inside an epoch), else its metrics.jsonl."""
    try:
        p = json.loads((d / PROGRESS).read_text())
        frac = (p["epoch"] - 1 + p["step"] / max(1, p["steps"])) / max(1, p["epochs"])
        return frac, f"epoch {p['epoch']}/{p['epochs']}, step {p['step']}/{p['steps']}"
    except (OSError, ValueError, KeyError):
        pass
    try:
        done = len((d / METRICS).read_text().splitlines())
        return done / epochs, f"{done}/{epochs} epochs done"
    except OSError:
        return 0.0, ""


def _storage(out: Path, config: dict):
    """The study's storage, opened read-only where it is a SQLite file; None if there is none."""
    import optuna

    from shallowmimic.search.storage import with_driver

    url = (config.get("search") or {}).get("storage") or ""
    if not url:
        db = out / DEFAULT_DB
        if not db.exists():
            return None
        url = f"sqlite:///file:{db.resolve()}?mode=ro&uri=true"  # read-only: status never writes there
    try:
        return optuna.storages.RDBStorage(with_driver(url), skip_compatibility_check=True, skip_table_creation=True)
    except Exception:  # noqa: BLE001 (a server that does not answer: the files still tell a lot)
        return None


def _trials(storage, name: str, states) -> list:
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False, states=states)
    except Exception:  # noqa: BLE001 (not created yet)
        return []


def _running(storage, out: Path) -> list[tuple[str, str]]:
    """(worker, job key) of each running job in the study's queue, read without taking part."""
    from optuna.trial import TrialState

    from shallowmimic.search.attrs import JOB, WORKER

    identity = read_study_id(out)
    # a study begun before study.id existed named its queue after its directory's path
    name = queue_name(identity) if identity else f"jobs:{Path(out).resolve()}"
    return [(t.user_attrs.get(WORKER, "?"), t.user_attrs[JOB].rsplit("#", 1)[0])
            for t in _trials(storage, name, (TrialState.RUNNING,)) if JOB in t.user_attrs]


def _search(storage, out: Path, job: dict) -> tuple[float, list[tuple[str, str]]]:
    """A search job's share done (finished trials of its count) and its running trials as
    (worker, where); its Optuna study is named after its directory."""
    from optuna.trial import TrialState

    from shallowmimic.search.attrs import TRIAL_DIR, WORKER

    trials = _trials(storage, Path(job["markers"][0]).parent.name, (TrialState.COMPLETE, TrialState.RUNNING))
    done = sum(t.state == TrialState.COMPLETE for t in trials)
    running = []
    for t in trials:
        if t.state == TrialState.RUNNING:
            where = _where(Path(t.user_attrs[TRIAL_DIR]), 1)[1] if TRIAL_DIR in t.user_attrs else ""
            running.append((t.user_attrs.get(WORKER, "?"), f"trial {t.number}" + (f", {where}" if where else "")))
    return done / max(1, job.get("trials") or 1), running


def flops_done(out: Path, jobs: list[dict], started: float) -> float:
    """Counted FLOPs of the finished jobs, plus the finished share of those in training."""
    return sum(job["total"] * (1.0 if _done(out, job, started) else _progress(out, job)[0]) for job in jobs)


def study_status(out: Path, queue: bool = True) -> Status:
    out = Path(out)
    record = read_plan(out)
    jobs, started = record["plan"]["jobs"], record["started"]
    optuna_quiet()
    storage = _storage(out, record.get("config", {})) if queue else None
    running = _running(storage, out) if storage else []
    stages: dict[str, list[int]] = {}
    done_flops, now_running = 0.0, []
    # a job's queue key is its marker file (a shard, an export) or, for a job with a result
    # file, the directory that holds it
    by_path, by_dir = {}, {}
    for job in jobs:
        finished = _done(out, job, started)
        counts = stages.setdefault(job["stage"], [0, 0])
        counts[0] += finished
        counts[1] += 1
        frac, where = (1.0, "") if finished else _progress(out, job)
        if not finished and storage and job.get("trials"):
            frac, trials = _search(storage, out, job)
            now_running += [Running(_short(w), f"{job['stage']} {job['name']} {t}", job["stage"], "")
                            for w, t in trials]
        done_flops += job["total"] * frac
        if job["markers"]:
            first = Path(job["markers"][0])
            by_path[first.as_posix()] = (job, where)
            if first.name in DIR_MARKERS:
                by_dir[first.parent.as_posix()] = (job, where)
    for worker, key in running:
        job, where = by_path.get(key) or by_dir.get(key) or ({"stage": "", "name": key}, "")
        now_running.append(Running(_short(worker), f"{job['stage']} {job['name']}".strip(), job["stage"], where))
    if storage is not None:
        storage.engine.dispose()
    total = record["plan"]["total_flops"]
    elapsed = time.time() - started
    since = done_flops - record.get("flops_done_at_start", 0.0)  # what this run has done
    eta = (total - done_flops) * elapsed / since if since > 0 and elapsed > 0 else None
    run = out / RUN_JSON
    finished = all(d == t for d, t in stages.values() if t) and run.exists() and run.stat().st_mtime >= started
    report = out / "report" / "report.md"
    return Status(record["config"].get("name", "study"), out, {k: (v[0], v[1]) for k, v in stages.items()},
                  total, done_flops, elapsed, eta, tuple(now_running), finished,
                  report if report.exists() else None)


def optuna_quiet() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
