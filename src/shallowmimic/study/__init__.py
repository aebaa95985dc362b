"""The study: its config and presets, its plan of jobs and their counted cost, the searches as
objectives, where a study is (`status`), and running it stage by stage.

Its public names are imported on first use (`core.lazy`): importing the package costs nothing.
"""

from shallowmimic.core.lazy import lazy_exports

_EXPORTS = {
    "PRESETS": "config", "StudyConfig": "config", "deviations": "config", "load_study": "config",
    "plan_cost": "cost",
    "plan": "planning",
    "dry_run": "run", "report_only": "run", "run_study": "run",
    "study_status": "status",
    "SearchConfig": "tuning", "tune_students": "tuning", "tune_teachers": "tuning",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
