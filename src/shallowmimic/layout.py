"""The names of the files a study directory holds that several layers read, defined once; a
module without torch or optuna, so that `shallowmimic status` starts in a fraction of a second."""

from __future__ import annotations

from pathlib import Path

RUN_JSON = "run.json"  # the run record, written as a run ends
PLAN_JSON = "plan.json"  # the plan and its counted cost, written as a run starts (what `status` reads)
DEFAULT_DB = "studies.db"  # the SQLite storage of searches and of the job queue, unless search.storage
METRICS = "metrics.jsonl"  # one line per epoch of a training
PROGRESS = "progress.json"  # where a training is inside an epoch
WORKERS_ENV = "SHALLOWMIMIC_WORKERS"  # how many workers `run --workers N` started (for the estimate)


STUDY_ID = "study.id"  # the study's identity, made once by its first worker: names its job queue


def queue_name(identity: str) -> str:
    """The name of the study's job queue (an Optuna study in its storage), from the identity the
    study directory records, so that workers reaching it by other paths (a symbolic link, another
    node's mount point) share one queue."""
    return f"jobs:{identity}"


def read_study_id(out: Path) -> str | None:
    """The identity a study directory records; None before its first run made one."""
    try:
        return (Path(out) / STUDY_ID).read_text().strip() or None
    except OSError:
        return None
