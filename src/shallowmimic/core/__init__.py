"""The base layer: one-line errors, atomic files and provenance, the study directory's file names,
devices and precision, typed configs from TOML, and the statistics every comparison uses.

Its public names are imported on first use (`core.lazy`): importing the package costs nothing.
"""

from shallowmimic.core.lazy import lazy_exports

_EXPORTS = {
    "apply_overrides": "config", "config_hash": "config", "from_dict": "config", "load_toml": "config",
    "merged": "config", "to_dict": "config", "to_toml": "config",
    "PRECISIONS": "device", "StageClock": "device", "autocast": "device", "check_device": "device",
    "compiled": "device", "configure_threads": "device", "machine_reference": "device", "memory_format": "device",
    "precision": "device", "resolve_device": "device", "set_compile": "device", "set_precision": "device",
    "compute": "device", "own_context": "device", "takes_compute": "device",
    "sync": "device",
    "DataError": "errors", "UserError": "errors",
    "atomic_path": "files", "create_once": "files", "current_umask": "files", "file_digest": "files",
    "provenance": "files", "read_json": "files", "write_json": "files",
    "DEFAULT_DB": "layout", "METRICS": "layout", "PLAN_JSON": "layout", "PROGRESS": "layout", "RUN_JSON": "layout",
    "STUDY_ID": "layout", "WORKERS_ENV": "layout", "queue_name": "layout", "read_study_id": "layout",
    "Comparison": "stats", "Interval": "stats", "bootstrap_diff": "stats", "bootstrap_mean": "stats",
    "compare": "stats", "verdict": "stats",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
