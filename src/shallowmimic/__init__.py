"""shallowmimic: do deep convolutional nets really need to be deep (or even convolutional)?

A reproduction toolkit for Urban et al., ICLR 2017. `import shallowmimic as sm` gives what a
notebook needs (docs/API.md), each name imported on first use; the layers are its subpackages
(docs/ARCHITECTURE.md).
"""

import importlib
import pkgutil

from shallowmimic.core.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "UserError": "core", "compute": "core",
    "Dataset": "data", "load_dataset": "data", "make_split": "data", "SplitConfig": "data", "SplitData": "data",
    "split_tensors": "data",
    "create_model": "models", "list_models": "models", "load_model": "models",
    "TrainConfig": "training", "teacher_config": "training", "train_teacher": "training",
    "build_ensemble": "distill", "load_ensemble": "distill", "TransferConfig": "distill", "generate": "distill",
    "StudentSetting": "distill", "train_student": "distill",
    "export_onnx": "deploy", "load_deployable": "deploy",
    "build_report": "report",
    "PRESETS": "study", "StudyConfig": "study", "load_study": "study", "dry_run": "study", "run_study": "study",
    "study_status": "study",
}
_SUBPACKAGES = tuple(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg)
__all__ = ["__version__", *_EXPORTS, *_SUBPACKAGES]
_lazy, __dir__ = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str) -> object:
    if name in _SUBPACKAGES:  # `sm.distill.generate` without an import of its own
        return importlib.import_module(f"{__name__}.{name}")
    return _lazy(name)
