"""Results, the paper's numbers, the four findings with their intervals, figures and the report
itself.

Its public names are imported on first use (`core.lazy`): importing the package costs nothing.
"""

from shallowmimic.core.lazy import lazy_exports

_EXPORTS = {
    "build_report": "build",
    "check_findings": "findings",
    "curves_figure": "curves",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
