"""The names of the files a study directory holds that several layers read, defined once; a
module without torch or optuna, so that `shallowmimic status` starts in a fraction of a second."""

from __future__ import annotations

from pathlib import Path

RUN_JSON = "run.json"  # the run record, written as a run ends
RESULT_JSON = "result.json"  # a trained model's record (teacher, student, trial): what marks it done
ENSEMBLE_JSON = "ensemble.json"  # an ensemble's manifest: its members and accuracies
TRANSFER_MANIFEST = "manifest.json"  # a transfer set's manifest: its shards and their digests
SEARCH_JSON = "search.json"  # a finished search's summary, in its trials directory
INFERENCE_NOTES = "inference.json"  # the inference stage's outcome, in out/inference/<hash>/
FAILED_JSON = "failed.json"  # a job that failed for good (a diverged student), with its reason
PLAN_JSON = "plan.json"  # the plan and its counted cost, written as a run starts (what `status` reads)
DEFAULT_DB = "studies.db"  # the SQLite storage of searches and of the job queue, unless search.storage
METRICS = "metrics.jsonl"  # one line per epoch of a training
CURVES_CSV = "curves.csv"  # the same per-epoch figures as CSV
TENSORBOARD_DIR = "tensorboard"  # a training's TensorBoard event files, where tensorboard is installed
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


def within(path: Path, out: Path) -> str:
    """`path` as the study knows it, relative to the study directory `out` (however either was
    reached: a symbolic link, another node's mount point), or as given if it lies outside."""
    path, out = Path(path), Path(out)
    if path.is_relative_to(out):
        return path.relative_to(out).as_posix()
    real, root = path.resolve(), out.resolve()
    return real.relative_to(root).as_posix() if real.is_relative_to(root) else str(path)
