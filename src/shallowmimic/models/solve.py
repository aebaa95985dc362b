"""The budget solver: the dependent width that brings a student family's free widths to a
parameter budget, nudging one free width where a single step of it is too coarse."""

from __future__ import annotations

from dataclasses import dataclass

from shallowmimic.core.errors import UserError
from shallowmimic.models.budget import TOLERANCE, format_budget, solve_width, within
from shallowmimic.models.notation import Arch, count_params, parse_spec
from shallowmimic.models.students import StudentFamily


@dataclass(frozen=True)
class Solved:
    family: str
    budget: int
    free: tuple  # after trimming
    dependent: int
    arch: Arch
    params: int

    @property
    def spec(self) -> str:
        return str(self.arch)

    @property
    def within_tolerance(self) -> bool:
        return within(self.params, self.budget)


def solve_student(
    family: StudentFamily, budget: int, free: tuple, channels: int = 3, size: int = 32, classes: int = 10
) -> Solved:
    """Solve the dependent width so the student's parameter count is as close to `budget` as
    an integer width allows. If that width is too coarse to land within 0.5% (a linear
    bottleneck behind a wide conv layer), one free width is nudged to absorb the rest."""
    free = tuple(free)
    if len(free) != len(family.free):
        raise UserError(
            f"{family.name} takes {len(family.free)} free value(s) ({', '.join(family.free)}), got {len(free)}"
        )
    if family.ratios:
        if any(r < 0 for r in free) or max(free) <= 0:
            raise UserError(f"{family.name}: unit ratios must be >= 0 with at least one > 0, got {free}")
    elif any(int(w) != w or w < 1 for w in free):
        raise UserError(f"{family.name}: free widths must be positive integers, got {free}")

    def count(f: tuple, d: int) -> int:
        return count_params(parse_spec(family.spec(f, d)), channels, size, classes)

    floor = count(free, 1)
    if floor > budget:
        raise UserError(
            f"{family.name}: the free widths {free} alone need {floor:,} parameters, more than the "
            f"budget of {budget:,} ({format_budget(budget)}); choose smaller widths"
        )
    dep = solve_width(lambda d: count(free, d), budget)
    if not within(count(free, dep), budget, TOLERANCE / 2) and not family.ratios:
        free, dep = _trim(count, free, dep, budget)
    arch = parse_spec(family.spec(free, dep))
    return Solved(family.name, budget, free, dep, arch, count_params(arch, channels, size, classes))


def _trim(count, free: tuple, dep: int, budget: int) -> tuple[tuple, int]:
    """When one step of the dependent width is too coarse for the tolerance, nudge one free
    width (with the dependent width at, one below or one above its solution) to absorb the
    remainder, choosing the smallest relative change to any free width."""
    best = None
    for d in (dep - 1, dep, dep + 1):
        if d < 1:
            continue
        for t in range(len(free)):
            def with_w(w: int, t=t) -> tuple:
                return free[:t] + (w,) + free[t + 1 :]

            w = solve_width(lambda w, d=d, with_w=with_w: count(with_w(w), d), budget)
            err = abs(count(with_w(w), d) - budget)
            key = (not within(err + budget, budget), abs(w - free[t]) / free[t], err)
            if best is None or key < best[0]:
                best = (key, with_w(w), d)
    return best[1], best[2]
