"""Learning-rate schedules as small pure components.

`Plateau` is the paper's rule (PROTOCOL section 4), driven once per epoch by the validation
error; `linear_lr` is the short fixed schedule of the fast presets, driven per step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Plateau:
    """Halve the LR after `patience` epochs without improvement, at least `cooldown` epochs
    after the previous change; stop after `stop_patience` epochs without improvement or once
    the LR has fallen by more than `max_reduction` in total.

    Epochs without improvement are counted from the last improvement and are not reset by a
    change, so after the first halving, further halvings come every `cooldown` epochs while
    the error stays flat.
    """

    patience: int = 10
    cooldown: int = 8
    stop_patience: int = 30
    max_reduction: float = 2000.0
    factor: float = 0.5
    # state
    best: float = float("inf")
    since_best: int = 0
    since_change: int | None = None  # None: no change yet
    scale: float = 1.0
    stopped: str = ""

    def step(self, val_error: float) -> float:
        """Record one epoch's validation error; return the LR scale for the next epoch."""
        if self.stopped:
            return self.scale
        if val_error < self.best:
            self.best, self.since_best = val_error, 0
        else:
            self.since_best += 1
        if self.since_change is not None:
            self.since_change += 1
        cooled = self.since_change is None or self.since_change >= self.cooldown
        if self.since_best >= self.patience and cooled:
            self.scale *= self.factor
            self.since_change = 0
        if self.since_best >= self.stop_patience:
            self.stopped = f"no validation improvement for {self.since_best} epochs"
        elif 1.0 / self.scale > self.max_reduction:
            self.stopped = f"learning rate reduced {1.0 / self.scale:g}x (> {self.max_reduction:g}x)"
        return self.scale

    def state(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> Plateau:
        return cls(**state)


SCHEDULES = ("plateau", "linear", "triangle")


def scheduled_lr(schedule: str, progress: float, warmup: float, plateau_scale: float) -> float:
    """The learning-rate scale at `progress` (fraction of all steps done) for any schedule;
    the plateau schedule's scale is set per epoch from validation (`Plateau`)."""
    if schedule == "plateau":
        return plateau_scale
    if schedule == "triangle":
        return triangle_lr(progress)
    if schedule == "linear":
        return linear_lr(progress, warmup)
    raise ValueError(f"unknown schedule {schedule!r} (known: {', '.join(SCHEDULES)})")


def linear_lr(progress: float, warmup: float = 0.1) -> float:
    """LR scale for a linear warm-up over the first `warmup` fraction, then linear decay to 0.
    `progress` in [0, 1] is the fraction of all training steps done."""
    if warmup > 0 and progress < warmup:
        return (progress + 1e-3) / warmup
    return max(0.0, (1.0 - progress) / (1.0 - warmup)) if warmup < 1 else 0.0


def triangle_lr(progress: float, start: float = 0.2, peak_at: float = 0.23, end: float = 0.07) -> float:
    """airbench's schedule: linear from `start` up to 1 at `peak_at`, then linear down to
    `end` at the last step (a one-cycle shape that stops short of zero)."""
    if progress < peak_at:
        return start + (1.0 - start) * progress / peak_at
    return 1.0 + (end - 1.0) * min(1.0, (progress - peak_at) / (1.0 - peak_at))
