"""timm-style entry points over the registries: `list_models` names every teacher variant and
student family, `create_model` builds one, untrained, exactly as the study would."""

from __future__ import annotations

import torch

from shallowmimic.core.errors import UserError
from shallowmimic.models.budget import parse_budget
from shallowmimic.models.notation import parse_spec
from shallowmimic.models.solve import solve_student
from shallowmimic.models.store import ModelSpec
from shallowmimic.models.students import STUDENT_OPTIONS, STUDENTS, default_free
from shallowmimic.models.teachers import TEACHERS

ROLES = ("teacher", "student")


def list_models(role: str | None = None) -> list[str]:
    """The registered names: teacher variants, then student families (or those of one role)."""
    if role is not None and role not in ROLES:
        raise UserError(f"unknown role {role!r} (known: {', '.join(ROLES)})")
    return [*(TEACHERS if role in (None, "teacher") else ()), *(STUDENTS if role in (None, "student") else ())]


def model_spec(name: str, budget: str | int | None = None, spec: str | None = None, free: tuple = (),
               size: int = 32, classes: int = 10) -> ModelSpec:
    """What `create_model` builds, as the `ModelSpec` a model directory records."""
    if name in TEACHERS:
        if budget is not None:
            raise UserError(f"teacher variant {name!r} takes a spec in the paper's notation, not a budget")
        variant = TEACHERS[name]
        return ModelSpec("teacher", name, str(parse_spec(spec or variant.default_spec)), variant.options, 3, size,
                         classes)
    if name in STUDENTS:
        if budget is None or spec is not None:
            raise UserError(f"student family {name!r} takes a parameter budget (e.g. budget='300k'), not a spec")
        family, count = STUDENTS[name], parse_budget(budget)
        solved = solve_student(family, count, tuple(free) or default_free(family, count), 3, size, classes)
        return ModelSpec("student", name, solved.spec, STUDENT_OPTIONS, 3, size, classes)
    raise UserError(f"unknown model {name!r} (known: {', '.join(list_models())})")


def create_model(name: str, *, budget: str | int | None = None, spec: str | None = None, free: tuple = (),
                 size: int = 32, classes: int = 10, seed: int = 0, device: str | torch.device = "cpu"
                 ) -> torch.nn.Module:
    """A teacher variant (its default layout, or `spec` in the paper's notation) or a student
    family at a parameter `budget` ("300k", 1e6; `free` widths, else the middle of the paper's
    ranges), initialized from `seed`. A fast teacher's whitening stem is fitted to images when
    it is trained (`training.train_teacher`), not here."""
    return model_spec(name, budget, spec, free, size, classes).build(device, seed)
