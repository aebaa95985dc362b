"""The study's losses, as plain modules over tensors. Each takes (student logits g, true
labels y, teacher logits z); a loss ignores what it does not use."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shallowmimic.core.errors import UserError


class HardLabelLoss(nn.Module):
    """Cross-entropy on the true labels: L = -1/T sum_t log softmax(g_t)[y_t], with optional
    label smoothing eps (target (1 - eps) one-hot + eps / K uniform)."""

    needs_logits = False

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, g, y, z=None):
        return F.cross_entropy(g.float(), y, label_smoothing=self.label_smoothing)


class MimicLoss(nn.Module):
    """The paper's student loss: L2 regression on the ensemble's logits (PROTOCOL section 6),
    L = 1/T sum_t || g_t - z_t ||^2, summed over classes and averaged over the batch. No
    temperature."""

    needs_logits = True

    def forward(self, g, y, z):
        return (g.float() - z.float()).pow(2).sum(dim=1).mean()


# Knowledge distillation's defaults (Hinton et al.'s usual choice); config fields override them.
KD_TEMPERATURE = 4.0
KD_ALPHA = 0.9


class DistillationLoss(nn.Module):
    """Hinton et al.'s knowledge distillation, as an option:
    L = alpha * tau^2 * KL(softmax(z / tau) || softmax(g / tau)) + (1 - alpha) * CE(g, y).
    The tau^2 keeps soft-target gradients on the scale of the hard ones."""

    needs_logits = True

    def __init__(self, temperature: float = KD_TEMPERATURE, alpha: float = KD_ALPHA):
        super().__init__()
        self.temperature, self.alpha = temperature, alpha

    def forward(self, g, y, z):
        t = self.temperature
        g = g.float()
        soft = F.kl_div(F.log_softmax(g / t, dim=1), F.log_softmax(z.float() / t, dim=1),
                        reduction="batchmean", log_target=True)
        return self.alpha * t * t * soft + (1 - self.alpha) * F.cross_entropy(g, y)


LOSSES = ("hard", "mimic", "kd")

# Gradient-norm clipping per loss unless a config says otherwise: L2 on logits has unbounded
# gradients and can diverge without it; cross-entropy's are bounded (0: no clipping).
GRAD_CLIP = {"hard": 0.0, "mimic": 5.0, "kd": 0.0}


def default_grad_clip(loss: str) -> float:
    if loss not in GRAD_CLIP:
        raise UserError(f"unknown loss {loss!r} (known: {', '.join(LOSSES)})")
    return GRAD_CLIP[loss]


def make_loss(name: str, label_smoothing: float = 0.0, temperature: float = KD_TEMPERATURE, alpha: float = KD_ALPHA):
    if name == "hard":
        return HardLabelLoss(label_smoothing)
    if name == "mimic":
        return MimicLoss()
    if name == "kd":
        return DistillationLoss(temperature, alpha)
    raise UserError(f"unknown loss {name!r} (known: {', '.join(LOSSES)})")


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(dim=1) == y).float().mean().item()
