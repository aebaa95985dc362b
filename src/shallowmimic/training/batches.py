"""Batches for training and evaluation, made on the device from uint8 images.

Everything random is drawn from generators seeded by (seed, epoch), so epoch e's batches are
the same whether or not training was interrupted before it: that is what makes resume exact.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from shallowmimic.augment.transforms import HSVConstants, alternating_flips, apply, flip_translate, sample_params
from shallowmimic.core.device import autocast, memory_format
from shallowmimic.core.stats import encode_correct
from shallowmimic.data.split import standardize, to_float


def seed_for(seed: int, *keys) -> int:
    """A 63-bit seed derived from `seed` and any keys (strings or ints), stable across runs."""
    ints = [seed] + [k if isinstance(k, int) else int.from_bytes(str(k).encode()[:8], "little") for k in keys]
    return int(np.random.SeedSequence(ints).generate_state(2, np.uint64)[0] >> np.uint64(1))


def prepare(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 NHWC -> standardized float NCHW on the device, in its preferred memory format."""
    x = standardize(to_float(images.to(device, non_blocking=True)))
    return x.contiguous(memory_format=memory_format(device))


class AugmentedBatches:
    """Shuffled, online-augmented minibatches of labelled images (teachers, hard-label runs).

    With `translate` > 0 the augmentation is the fast teachers' light one (a flip, alternating
    across epochs with `alternate`, and a shift of up to `translate` pixels) instead of the
    paper's HSV + flip + crop-rescale.
    An epoch's augmentation parameters are drawn in one go, then sliced per batch."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, hsv: HSVConstants | None,
                 batch_size: int, seed: int, translate: int = 0, alternate: bool = True):
        self.images, self.labels = images, labels
        self.hsv, self.batch_size, self.seed, self.translate = hsv, batch_size, seed, translate
        self.alternate = alternate

    def __len__(self) -> int:
        n = len(self.images)
        return max(1, n // self.batch_size)  # full batches only (batch norm needs > 1 image)

    def epoch(self, e: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, None]]:
        g = torch.Generator().manual_seed(seed_for(self.seed, "batches", e))
        n = len(self.images)
        order = torch.randperm(n, generator=g)
        device = self.images.device
        size = self.images.shape[1]
        bs = min(self.batch_size, n)
        used = len(self) * bs
        if self.translate:
            if self.alternate:
                flips = alternating_flips(n, e, torch.Generator().manual_seed(seed_for(self.seed, "flips")))[order]
            else:
                flips = torch.rand(n, generator=g) < 0.5
            shifts = torch.randint(0, 2 * self.translate + 1, (2, used), generator=g)
        elif self.hsv is not None:
            record = sample_params(used, size, self.hsv, g)
        for i in range(len(self)):
            sl = slice(i * bs, (i + 1) * bs)
            idx = order[sl].to(device)
            x = to_float(self.images[idx])
            if self.translate:
                x = flip_translate(x, flips[sl], shifts[0, sl], shifts[1, sl], self.translate)
            elif self.hsv is not None:
                x = apply(x, record[sl])
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
    return float(correctness(model, images, labels, batch_size).mean())


def correctness(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                batch_size: int = 1000) -> np.ndarray:
    """Bool (n,): which images the model classifies correctly (the unit of every paired test)."""
    logits = predict_logits(model, images, batch_size)
    return (logits.argmax(1) == labels.cpu()).numpy()


def test_record(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> dict:
    """Test accuracy plus per-image correctness (packed bits, base64) for a result file."""
    return logits_record(predict_logits(model, images, batch_size), labels)


def logits_record(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """`test_record` from test logits computed already."""
    c = (logits.argmax(1) == labels.cpu()).numpy()
    return {"test_acc": float(c.mean()), "test_n": len(c), "test_correct": encode_correct(c)}
