"""Model families of the study, as data: the teacher variants and the nine student families.

A student family turns free widths (or unit ratios) plus one dependent width into a spec in
the paper's notation; `solve_student` picks the dependent width that meets a parameter budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shallowmimic.core.errors import UserError
from shallowmimic.models.budget import PAPER_BUDGETS, TOLERANCE, format_budget, solve_width, within
from shallowmimic.models.notation import Arch, BuildOptions, count_params, parse_spec

# --- teachers -------------------------------------------------------------------------------

#: Width ranges C1, C2, C3, H that the four teacher scale factors in [0, 1] map onto.
TEACHER_WIDTH_RANGES = ((32, 96), (64, 192), (128, 384), (512, 1536))


def teacher_spec(scales: tuple[float, float, float, float]) -> str:
    """`C1c2-mp-C2c2-mp-C3c4-mp-Hfc2` from the four scale factors (PROTOCOL section 3)."""
    if len(scales) != 4 or not all(0.0 <= s <= 1.0 for s in scales):
        raise UserError(f"teacher scales must be four numbers in [0, 1], got {tuple(scales)}")
    c1, c2, c3, h = (round(lo + s * (hi - lo)) for s, (lo, hi) in zip(scales, TEACHER_WIDTH_RANGES, strict=True))
    return f"{c1}c2-mp-{c2}c2-mp-{c3}c4-mp-{h}fc2"


@dataclass(frozen=True)
class TeacherVariant:
    name: str
    description: str
    options: BuildOptions
    default_spec: str
    # training defaults that suit the variant (overridable)
    schedule: str
    lr: float  # for the batch-mean loss
    momentum: float
    weight_decay: float
    batch_size: int
    label_smoothing: float = 0.0
    bias_lr_scale: float = 1.0
    lookahead: bool = False
    translate: int = 0  # > 0: light augmentation (flips, shifts up to this many pixels)
    alternating_flip: bool = True  # light augmentation: alternate each image's flip across epochs
    val_every: int = 1
    deviations: tuple[str, ...] = ()  # how it departs from PROTOCOL section 3, for the report


TEACHERS: dict[str, TeacherVariant] = {
    "paper": TeacherVariant(
        name="paper",
        description="The paper's teacher: ReLU CNN, dropout after each pool and FC layer, Glorot "
        "init, L2 weight decay, no batch norm, plateau schedule (middle of every search range).",
        options=BuildOptions(pool_dropout=(0.2, 0.3, 0.37), fc_dropout=0.425, init_scale=1.075),
        default_spec=teacher_spec((0.5, 0.5, 0.5, 0.5)),
        schedule="plateau", lr=0.022, momentum=0.855, weight_decay=2e-4, batch_size=128,
    ),
    "fast": TeacherVariant(
        name="fast",
        description="A CIFAR-10 speed-run recipe (after airbench) for little compute: frozen "
        "patch-whitening stem, three conv groups with batch norm and GELU, identity init, "
        "64x learning rate for biases, lookahead, label smoothing 0.2, alternating flip and "
        "2-pixel shifts, a triangular schedule, flip test-time augmentation.",
        options=BuildOptions(batchnorm=True, activation="gelu", dirac_init=True, head_scale=1 / 9, tta="flip"),
        default_spec="24w@2-64g-128g-256g-gmp",
        # airbench's hyperparameters (lr 11.5, wd 0.0153 per 1024 summed examples, momentum
        # 0.85) converted to a batch-mean loss at batch 512
        schedule="triangle", lr=0.75, momentum=0.85, weight_decay=1.95e-6, batch_size=512,
        label_smoothing=0.2, bias_lr_scale=64.0, lookahead=True, translate=2, val_every=1000,
        deviations=("teachers are not the paper's architecture: a whitening stem, three conv groups "
                    "(conv-pool-BN-GELU-conv-BN-GELU) and a global max-pool, as in airbench",
                    "teachers use batch norm, label smoothing 0.2, no dropout, and flip test-time augmentation",
                    "teachers train with a fixed triangular schedule and lookahead for a few epochs, not "
                    "the plateau schedule for up to 500",
                    "teachers see flips and 2-pixel shifts only, not the paper's HSV and crop-rescale augmentation"),
    ),
    "bn": TeacherVariant(
        name="bn",
        description="The paper's layout with batch norm after every conv and FC layer, no dropout, "
        "label smoothing 0.1, a short linear-decay schedule with warm-up; narrow widths for CPUs.",
        options=BuildOptions(batchnorm=True),
        default_spec="16c2-mp-32c2-mp-64c4-mp-256fc2",
        schedule="linear", lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=256,
        label_smoothing=0.1,
        deviations=("teachers use batch norm, label smoothing 0.1 and no dropout",
                    "teachers train with a short linear-decay schedule, not the plateau schedule for up to 500"),
    ),
}


def get_teacher(name: str) -> TeacherVariant:
    if name not in TEACHERS:
        raise UserError(f"unknown teacher variant {name!r} (known: {', '.join(TEACHERS)})")
    return TEACHERS[name]


# --- students -------------------------------------------------------------------------------

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
    "conv2": StudentFamily(
        name="conv2",
        description="2 conv layers (5x5), each followed by 2x2 max-pool, one FC layer",
        conv_layers=2,
        free=("conv1", "conv2"),
        dependent="fc",
        template=lambda f, d: f"{f[0]}c@5-mp-{f[1]}c@5-mp-{d}fc",
        ranges=_per_budget(((20, 120), (50, 250), (50, 350), (50, 800)), ((20, 120),) * 4),
    ),
    "conv3": StudentFamily(
        name="conv3",
        description="3 conv layers (5x5), each followed by 2x2 max-pool, one FC layer",
        conv_layers=3,
        free=("conv1", "conv2", "conv3"),
        dependent="fc",
        template=lambda f, d: f"{f[0]}c@5-mp-{f[1]}c@5-mp-{f[2]}c@5-mp-{d}fc",
        ranges=_per_budget(*(((20, 110), (40, 200), (50, 350), (50, 650)),) * 3),
    ),
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


# --- budgets --------------------------------------------------------------------------------


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
