"""The hyperparameter search spaces of the paper (PROTOCOL sections 3 and 6), as data next to the
model families they configure. A space is a tuple of `Param`s; `search.studies.suggest` turns it into
an Optuna trial's values, and the `*_from_params` functions turn values back into models."""

from __future__ import annotations

from dataclasses import dataclass

from shallowmimic.augment.transforms import HSVConstants
from shallowmimic.models.notation import BuildOptions
from shallowmimic.models.students import StudentFamily, free_ranges
from shallowmimic.models.teachers import teacher_spec

SAMPLERS = ("gp", "tpe", "random")  # Optuna's GP sampler, TPE, or random search (search/studies.py builds them)


@dataclass(frozen=True)
class Param:
    name: str
    low: float
    high: float
    log: bool = False
    integer: bool = False


#: The teachers' 18 hyperparameters with the paper's ranges and log scales. The paper counts
#: 18 but names 17 (LR, momentum, weight decay, init scale, 4 dropout rates, 4 width scales,
#: 5 HSV constants); the 18th here is the input scale, with the range the paper searches for
#: students.
TEACHER_SPACE: tuple[Param, ...] = (
    Param("lr", 0.01, 0.05, log=True),
    Param("momentum", 0.80, 0.91, log=True),
    Param("weight_decay", 5e-5, 4e-4),
    Param("init_scale", 0.8, 1.35),
    Param("input_scale", 0.8, 1.25),
    Param("dropout_c1", 0.1, 0.3),
    Param("dropout_c2", 0.25, 0.35),
    Param("dropout_c3", 0.3, 0.44),
    Param("dropout_fc", 0.2, 0.65),
    Param("scale_c1", 0.0, 1.0),
    Param("scale_c2", 0.0, 1.0),
    Param("scale_c3", 0.0, 1.0),
    Param("scale_h", 0.0, 1.0),
    Param("hsv_dh", 0.03, 0.11),
    Param("hsv_ds", 0.2, 0.3),
    Param("hsv_dv", 0.0, 0.2),
    Param("hsv_as", 0.2, 0.3),
    Param("hsv_av", 0.03, 0.2),
)


def teacher_from_params(p: dict) -> tuple[str, BuildOptions, HSVConstants]:
    """(spec, build options, augmentation constants) of a paper teacher with these values."""
    spec = teacher_spec((p["scale_c1"], p["scale_c2"], p["scale_c3"], p["scale_h"]))
    options = BuildOptions(pool_dropout=(p["dropout_c1"], p["dropout_c2"], p["dropout_c3"]),
                           fc_dropout=p["dropout_fc"], init_scale=p["init_scale"],
                           input_scale=p["input_scale"])
    hsv = HSVConstants(p["hsv_dh"], p["hsv_ds"], p["hsv_dv"], p["hsv_as"], p["hsv_av"])
    return spec, options, hsv


#: Shared by every student family and budget.
STUDENT_COMMON: tuple[Param, ...] = (
    Param("lr", 0.0013, 0.016, log=True),
    Param("momentum", 0.68, 0.97, log=True),
    Param("init_scale", 0.4, 2.0),
    Param("input_scale", 0.8, 1.25),
)


def student_space(family: StudentFamily, budget: int) -> tuple[Param, ...]:
    """Learning rate, momentum, init and input scale, plus the family's free widths at this
    budget (the paper's table), or its unit ratios for mlp2..mlp5."""
    ranges = free_ranges(family, budget)
    free = tuple(Param(name, lo, hi, integer=not family.ratios)
                 for name, (lo, hi) in zip(family.free, ranges, strict=True))
    return STUDENT_COMMON + free


def student_free(family: StudentFamily, p: dict) -> tuple:
    if family.ratios:
        return tuple(max(p[n], 0.05) for n in family.free)  # an all-zero ratio has no widest layer
    return tuple(int(p[n]) for n in family.free)
