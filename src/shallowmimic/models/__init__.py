"""Model notation (`notation`) and building (`layers`), `create_model` / `list_models`, parameter
budgets and the width solver, the registered teacher and student families, search spaces,
checkpoints, model directories on disk and counted FLOPs.

Its public names are imported on first use (`core.lazy`): importing the package costs nothing.
"""

from shallowmimic.core.lazy import lazy_exports

_EXPORTS = {
    "create_model": "create", "list_models": "create", "model_spec": "create",
    "Arch": "notation", "BuildOptions": "notation", "count_params": "notation", "format_spec": "notation",
    "layer_table": "notation", "parse_spec": "notation", "build": "layers", "with_tta": "layers",
    "PAPER_BUDGETS": "budget", "format_budget": "budget", "parse_budget": "budget", "solve_width": "budget",
    "load_checkpoint": "checkpoint", "load_weights": "checkpoint", "save_checkpoint": "checkpoint",
    "save_weights": "checkpoint",
    "STUDENTS": "students", "StudentFamily": "students", "get_student": "students", "default_free": "students",
    "free_ranges": "students", "TEACHERS": "teachers", "TeacherVariant": "teachers", "TeacherRecipe": "teachers",
    "get_teacher": "teachers", "teacher_spec": "teachers", "Solved": "solve", "solve_student": "solve",
    "inference_flops_per_image": "flops", "train_flops_per_image": "flops",
    "SAMPLERS": "spaces", "TEACHER_SPACE": "spaces", "student_space": "spaces",
    "ExternalTeacher": "external", "load_external": "external",
    "ModelSpec": "store", "load_model": "store", "save_model_spec": "store", "ModelResult": "result",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
