"""The paper's method: the ensemble of the best teachers, the transfer set it labels, and the
students that mimic it.

Its public names are imported on first use (`core.lazy`): importing the package costs nothing.
"""

from shallowmimic.core.lazy import lazy_exports

_EXPORTS = {
    "Ensemble": "ensemble", "build_ensemble": "ensemble", "load_ensemble": "ensemble", "select_best": "ensemble",
    "load_member": "ensemble",
    "StudentSetting": "students", "train_student": "students",
    "TransferBatches": "transfer", "TransferConfig": "transfer", "generate": "transfer",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
