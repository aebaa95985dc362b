"""The teacher variants, as data: each one's layout options, default architecture, training
recipe and augmentation, and how it departs from the paper's teacher (for the report)."""

from __future__ import annotations

from dataclasses import dataclass

from shallowmimic.core.errors import UserError
from shallowmimic.models.notation import BuildOptions

#: Width ranges C1, C2, C3, H that the four teacher scale factors in [0, 1] map onto.
TEACHER_WIDTH_RANGES = ((32, 96), (64, 192), (128, 384), (512, 1536))


def teacher_spec(scales: tuple[float, float, float, float]) -> str:
    """`C1c2-mp-C2c2-mp-C3c4-mp-Hfc2` from the four scale factors (PROTOCOL section 3)."""
    if len(scales) != 4 or not all(0.0 <= s <= 1.0 for s in scales):
        raise UserError(f"teacher scales must be four numbers in [0, 1], got {tuple(scales)}")
    c1, c2, c3, h = (round(lo + s * (hi - lo)) for s, (lo, hi) in zip(scales, TEACHER_WIDTH_RANGES, strict=True))
    return f"{c1}c2-mp-{c2}c2-mp-{c3}c4-mp-{h}fc2"


@dataclass(frozen=True)
class TeacherRecipe:
    """How a variant trains unless told otherwise: each field is the `training.TrainConfig`
    field of the same name (a test holds them to it), so `training.teacher_config` copies the
    recipe as a whole."""

    schedule: str
    lr: float  # for the batch-mean loss
    momentum: float
    weight_decay: float
    batch_size: int
    label_smoothing: float = 0.0
    bias_lr_scale: float = 1.0
    lookahead: bool = False
    val_every: int = 1


@dataclass(frozen=True)
class TeacherVariant:
    name: str
    description: str
    options: BuildOptions
    default_spec: str
    recipe: TeacherRecipe
    translate: int = 0  # > 0: light augmentation (flips, shifts up to this many pixels)
    alternating_flip: bool = True  # light augmentation: alternate each image's flip across epochs
    deviations: tuple[str, ...] = ()  # how it departs from PROTOCOL section 3, for the report


TEACHERS: dict[str, TeacherVariant] = {
    "paper": TeacherVariant(
        name="paper",
        description="The paper's teacher: ReLU CNN, dropout after each pool and FC layer, Glorot "
        "init, L2 weight decay, no batch norm, plateau schedule (middle of every search range).",
        options=BuildOptions(pool_dropout=(0.2, 0.3, 0.37), fc_dropout=0.425, init_scale=1.075),
        default_spec=teacher_spec((0.5, 0.5, 0.5, 0.5)),
        recipe=TeacherRecipe(schedule="plateau", lr=0.022, momentum=0.855, weight_decay=2e-4, batch_size=128),
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
        recipe=TeacherRecipe(schedule="triangle", lr=0.75, momentum=0.85, weight_decay=1.95e-6, batch_size=512,
                             label_smoothing=0.2, bias_lr_scale=64.0, lookahead=True, val_every=1000),
        translate=2,
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
        recipe=TeacherRecipe(schedule="linear", lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=256,
                             label_smoothing=0.1),
        deviations=("teachers use batch norm, label smoothing 0.1 and no dropout",
                    "teachers train with a short linear-decay schedule, not the plateau schedule for up to 500"),
    ),
}


def get_teacher(name: str) -> TeacherVariant:
    if name not in TEACHERS:
        raise UserError(f"unknown teacher variant {name!r} (known: {', '.join(TEACHERS)})")
    return TEACHERS[name]
