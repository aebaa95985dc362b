"""Optuna studies in a real database (SQLite or PostgreSQL), their workers, and the job queue that
hands each fixed job of a study to one worker.

Its public names are imported on first use (`core.lazy`): importing the package costs nothing.
"""

from shallowmimic.core.lazy import lazy_exports

_EXPORTS = {
    "JobQueue": "jobs", "open_queue": "jobs", "worker_id": "jobs",
    "open_study": "studies", "run_worker": "studies",
    "make_storage": "storage", "storage_url": "storage", "with_driver": "storage",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
