"""ONNX export checked by onnxruntime, and the inference cost of every model of a study.

Its public names are imported on first use (`core.lazy`): importing the package costs nothing.
"""

from shallowmimic.core.lazy import lazy_exports

_EXPORTS = {
    "Deployable": "export", "export_onnx": "export", "load_deployable": "export",
    "measure": "inference", "measure_study": "inference",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
