"""Text for `shallowmimic arch`: a layer table, and solving a student from CLI strings."""

from __future__ import annotations

from shallowmimic.core.errors import UserError
from shallowmimic.models.budget import parse_budget
from shallowmimic.models.notation import Arch, layer_table
from shallowmimic.models.solve import Solved, solve_student
from shallowmimic.models.students import default_free, get_student


def arch_table(arch: Arch, channels: int, size: int, classes: int, batchnorm: bool = False) -> str:
    rows = layer_table(arch, channels, size, classes, batchnorm)
    w = max(len(r[1]) for r in rows) + 2
    lines = [f"{arch}   (input {channels}x{size}x{size}, {classes} classes)",
             f"{'#':>3}  {'layer':<12}{'output':>{w}}{'params':>14}"]
    for i, (name, shape, n) in enumerate(rows, 1):
        lines.append(f"{i:>3}  {name:<12}{shape:>{w}}{n:>14,}")
    total = sum(r[2] for r in rows)
    lines.append(f"{'':>3}  {'total':<12}{'':>{w}}{total:>14,}  ({total / 1e6:.2f}M)")
    return "\n".join(lines)


def parse_free(family: str, widths: str | None) -> tuple:
    """`--widths` as the family's free values (integers, or ratios for mlp2..5); () if not given."""
    if not widths:
        return ()
    fam = get_student(family)
    try:
        return tuple((float if fam.ratios else int)(v) for v in widths.split(","))
    except ValueError:
        raise UserError(f"--widths {widths!r}: expected comma-separated "
                        f"{'numbers' if fam.ratios else 'whole numbers'}") from None


def solve_from_cli(family: str, budget: str | None, widths: str | None, size: int, classes: int) -> Solved:
    fam = get_student(family)
    if not budget:
        raise UserError("--student needs --budget (e.g. 1M, 3.16M, 300k)")
    n = parse_budget(budget)
    return solve_student(fam, n, parse_free(family, widths) or default_free(fam, n), 3, size, classes)
