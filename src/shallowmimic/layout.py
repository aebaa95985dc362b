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


def queue_name(out: Path) -> str:
    """The name of the study's job queue (an Optuna study in its storage)."""
    return f"jobs:{Path(out).resolve()}"
