"""FLOPs per image, counted by PyTorch's FlopCounterMode (matmuls and convolutions; elementwise
work, pooling and normalization are not counted), never estimated by hand."""

from __future__ import annotations

import torch


def train_flops_per_image(model: torch.nn.Module, channels: int, size: int) -> float:
    """One training step per image (forward + backward), counted on a batch of 2."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    x = torch.randn(2, channels, size, size, device=device)
    with FlopCounterMode(display=False) as counter:
        model(x).float().sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


@torch.no_grad()
def inference_flops_per_image(model: torch.nn.Module, sample: torch.Tensor) -> float:
    """One forward pass per image of `sample` (a batch in the model's input form), in the
    model's current mode: an eval-mode model with test-time augmentation counts every view,
    an ensemble every member."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(sample)
    return counter.get_total_flops() / len(sample)
