"""Batches for training and evaluation, made on the device from uint8 images.

Everything random is drawn from generators seeded by (seed, epoch), so epoch e's batches are
the same whether or not training was interrupted before it: that is what makes resume exact.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .augment import HSVConstants, apply, sample_params
from .device import autocast, memory_format
from .preprocess import standardize, to_float


def seed_for(seed: int, *keys) -> int:
    """A 63-bit seed derived from `seed` and any keys (strings or ints), stable across runs."""
    ints = [seed] + [k if isinstance(k, int) else int.from_bytes(str(k).encode()[:8], "little") for k in keys]
    return int(np.random.SeedSequence(ints).generate_state(2, np.uint64)[0] >> np.uint64(1))


def prepare(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 NHWC -> standardized float NCHW on the device, in its preferred memory format."""
    x = standardize(to_float(images.to(device, non_blocking=True)))
    return x.contiguous(memory_format=memory_format(device))


class AugmentedBatches:
    """Shuffled, online-augmented minibatches of labelled images (teachers, hard-label runs)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, hsv: HSVConstants | None,
                 batch_size: int, seed: int):
        self.images, self.labels = images, labels
        self.hsv, self.batch_size, self.seed = hsv, batch_size, seed

    def __len__(self) -> int:
        n = len(self.images)
        return max(1, n // self.batch_size)  # full batches only (batch norm needs > 1 image)

    def epoch(self, e: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, None]]:
        g = torch.Generator().manual_seed(seed_for(self.seed, "batches", e))
        order = torch.randperm(len(self.images), generator=g)
        device = self.images.device
        size = self.images.shape[1]
        bs = min(self.batch_size, len(self.images))
        for i in range(len(self)):
            idx = order[i * bs : (i + 1) * bs].to(device)
            x = to_float(self.images[idx])
            if self.hsv is not None:
                x = apply(x, sample_params(len(idx), size, self.hsv, g))
            x = standardize(x).contiguous(memory_format=memory_format(device))
            yield x, self.labels[idx], None


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Float32 logits on the CPU for uint8 NHWC `images` (no augmentation), in eval mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        with autocast(device):
            out.append(model(prepare(images[i : i + batch_size], device)).float().cpu())
    model.train(was_training)
    return torch.cat(out)


def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    logits = predict_logits(model, images, batch_size)
    return (logits.argmax(1) == labels.cpu()).float().mean().item()
