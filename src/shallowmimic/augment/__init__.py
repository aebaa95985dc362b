"""The paper's batched augmentation (the student's and the teacher's constants) and the preview
grid of it.

Its public names are imported on first use (`core.lazy`): importing the package costs nothing.
"""

from shallowmimic.core.lazy import lazy_exports

_EXPORTS = {
    "save_preview": "preview",
    "AugParams": "transforms", "HSVConstants": "transforms", "STUDENT_HSV": "transforms",
    "TEACHER_HSV": "transforms", "alternating_flips": "transforms", "augment": "transforms",
    "flip_translate": "transforms", "sample_params": "transforms",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
