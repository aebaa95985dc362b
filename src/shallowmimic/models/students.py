"""The nine student families, as data, and their search ranges.

A student family turns free widths (or unit ratios) plus one dependent width into a spec in
the paper's notation; `models.solve_student` picks the dependent width that meets a budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shallowmimic.core.errors import UserError
from shallowmimic.models.budget import PAPER_BUDGETS
from shallowmimic.models.notation import BuildOptions

Ranges = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class StudentFamily:
    name: str
    description: str
    conv_layers: int
    free: tuple[str, ...]  # names of the free values, in order
    dependent: str  # the layer whose width is solved for the budget
    template: Callable[[tuple, int], str]  # (free values, dependent width) -> spec
    ranges: dict[str, Ranges]  # paper budget name -> (lo, hi) per free value
    ratios: bool = False  # free values are unit ratios (mlp2..mlp5)

    def spec(self, free: tuple, dependent: int) -> str:
        return self.template(tuple(free), int(dependent))


def _ratio_widths(ratios: tuple, widest: int) -> list[int]:
    top = max(ratios)
    return [max(1, round(widest * r / top)) for r in ratios]


def _mlp(k: int) -> StudentFamily:
    return StudentFamily(
        name=f"mlp{k}",
        description=f"MLP with {k} hidden ReLU layers; widths from unit ratios scaled to the budget",
        conv_layers=0,
        free=tuple(f"ratio{i + 1}" for i in range(k)),
        dependent="widest hidden layer",
        template=lambda r, d: "-".join(f"{w}fc" for w in _ratio_widths(r, d)),
        ranges={b: ((0.0, 1.0),) * k for b in PAPER_BUDGETS},
        ratios=True,
    )


_PB = tuple(PAPER_BUDGETS)  # "1M", "3.16M", "10M", "31.6M"


def _per_budget(*columns: Ranges) -> dict[str, Ranges]:
    """Ranges given per free width as (1M, 3.16M, 10M, 31.6M) tuples -> per budget."""
    return {b: tuple(col[i] for col in columns) for i, b in enumerate(_PB)}


def _pooled_convs(k: int, *columns: Ranges) -> StudentFamily:
    """k conv layers, each followed by a 2x2 max-pool, then one FC layer of the dependent width."""
    return StudentFamily(
        name=f"conv{k}",
        description=f"{k} conv layers (5x5), each followed by 2x2 max-pool, one FC layer",
        conv_layers=k,
        free=tuple(f"conv{i + 1}" for i in range(k)),
        dependent="fc",
        template=lambda f, d: "".join(f"{w}c@5-mp-" for w in f) + f"{d}fc",
        ranges=_per_budget(*columns),
    )


STUDENTS: dict[str, StudentFamily] = {
    "mlp1": StudentFamily(
        name="mlp1",
        description="MLP, one hidden ReLU layer behind a linear bottleneck (Ba & Caruana)",
        conv_layers=0,
        free=("fc",),
        dependent="linear bottleneck",
        template=lambda f, d: f"{d}L-{f[0]}fc",
        ranges=_per_budget(((500, 5000), (1000, 20000), (5000, 30000), (5000, 45000))),
    ),
    **{f"mlp{k}": _mlp(k) for k in range(2, 6)},
    "conv1": StudentFamily(
        name="conv1",
        description="1 conv layer (5x5), 3x3 max-pool, linear bottleneck, one FC layer",
        conv_layers=1,
        free=("conv", "fc"),
        dependent="linear bottleneck",
        template=lambda f, d: f"{f[0]}c@5-mp3-{d}L-{f[1]}fc",
        ranges=_per_budget(((40, 150), (50, 300), (50, 450), (200, 600)),
                           ((200, 1600), (100, 4000), (500, 20000), (1000, 4100))),
    ),
    "conv2": _pooled_convs(2, ((20, 120), (50, 250), (50, 350), (50, 800)), ((20, 120),) * 4),
    "conv3": _pooled_convs(3, *(((20, 110), (40, 200), (50, 350), (50, 650)),) * 3),
    "conv4": StudentFamily(
        name="conv4",
        description="4 conv layers (5x5): c-mp-c-c-mp-c-mp, one FC layer",
        conv_layers=4,
        free=("conv1", "conv2", "conv3", "conv4"),
        dependent="fc",
        template=lambda f, d: f"{f[0]}c@5-mp-{f[1]}c@5-{f[2]}c@5-mp-{f[3]}c@5-mp-{d}fc",
        ranges=_per_budget(((25, 100), (50, 150), (50, 300), (50, 500)),
                           ((25, 100), (50, 150), (50, 300), (50, 500)),
                           ((25, 100), (50, 200), (50, 350), (50, 650)),
                           ((25, 100), (50, 200), (50, 350), (50, 650))),
    ),
}

#: Students use no dropout and no weight decay (PROTOCOL section 6).
STUDENT_OPTIONS = BuildOptions()


def get_student(name: str) -> StudentFamily:
    if name not in STUDENTS:
        raise UserError(f"unknown student family {name!r} (known: {', '.join(STUDENTS)})")
    return STUDENTS[name]


def free_ranges(family: StudentFamily, budget: int) -> Ranges:
    """The paper's search ranges for a budget. Other budgets take the nearest paper budget's
    ranges (in log scale); below 1M, widths shrink with sqrt(budget / 1M), since a layer's
    parameters grow with the square of the widths."""
    nearest = min(PAPER_BUDGETS, key=lambda b: abs(math.log(budget / PAPER_BUDGETS[b])))
    ranges = family.ranges[nearest]
    if family.ratios or budget >= PAPER_BUDGETS["1M"]:
        return ranges
    shrink = math.sqrt(budget / PAPER_BUDGETS["1M"])
    return tuple((max(4, round(lo * shrink)), max(4, round(hi * shrink))) for lo, hi in ranges)


def sample_free(family: StudentFamily, budget: int, rng: np.random.Generator) -> tuple:
    """Draw free values uniformly from the family's ranges at this budget."""
    ranges = free_ranges(family, budget)
    if family.ratios:
        return tuple(float(rng.uniform(max(lo, 0.05), hi)) for lo, hi in ranges)
    return tuple(int(rng.integers(lo, hi + 1)) for lo, hi in ranges)


def default_free(family: StudentFamily, budget: int) -> tuple:
    """The middle of each range: a reasonable student when no search is run."""
    ranges = free_ranges(family, budget)
    if family.ratios:
        return (1.0,) * len(ranges)
    return tuple(round((lo + hi) / 2) for lo, hi in ranges)
