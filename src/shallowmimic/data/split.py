"""The paper's train/validation split, its images as tensors on a device, and per-image
standardization."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from shallowmimic.core.errors import UserError
from shallowmimic.data.sources import Dataset


@dataclass(frozen=True)
class Split:
    """Indices into the training set. The validation part drives early stopping, the LR
    schedule, the search and ensemble selection; the test set is never split."""

    train: np.ndarray  # int64 indices
    val: np.ndarray
    seed: int

    def fingerprint(self) -> str:
        """A short hash of the exact indices, recorded so later stages can check they reuse it."""
        h = hashlib.sha256(self.train.astype("<i8").tobytes())
        h.update(self.val.astype("<i8").tobytes())
        return h.hexdigest()[:16]


def make_split(n: int, val_size: int = 10_000, seed: int = 0) -> Split:
    """A seeded random split of `n` training images into n - val_size / val_size.

    Uses numpy's PCG64 so the same seed gives the same split on every platform and version.
    """
    if not 0 < val_size < n:
        raise UserError(f"validation size {val_size} must be between 1 and {n - 1} for {n} images")
    perm = np.random.Generator(np.random.PCG64(seed)).permutation(n)
    return Split(train=np.sort(perm[val_size:]), val=np.sort(perm[:val_size]), seed=seed)


@dataclass(frozen=True)
class SplitConfig:
    val_size: int = 10_000
    seed: int = 0
    train_limit: int = 0  # > 0: use only the first N training images (smoke runs)
    val_limit: int = 0

    def __post_init__(self):
        # a negative limit would slice from the end and keep all but N images, silently
        for name in ("train_limit", "val_limit"):
            if getattr(self, name) < 0:
                raise UserError(f"data.{name} must be 0 (all) or a number of images, got {getattr(self, name)}")
        if self.val_size < 1:
            raise UserError(f"data.val_size must be at least 1, got {self.val_size}")


@dataclass(frozen=True)
class SplitData:
    """The split's images (uint8 NHWC) and labels (int64) as tensors on one device, limits
    applied, with the fingerprint of its indices that later stages check they reuse."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    fingerprint: str


def split_tensors(ds: Dataset, cfg: SplitConfig, device) -> SplitData:
    """The split as uint8/int64 tensors on the device, with limits applied."""
    split = make_split(len(ds.x_train), cfg.val_size, cfg.seed)
    tr, va = split.train, split.val
    if cfg.train_limit:
        tr = tr[: cfg.train_limit]
    if cfg.val_limit:
        va = va[: cfg.val_limit]
    t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return SplitData(x_train=t(ds.x_train[tr]), y_train=t(ds.y_train[tr]), x_val=t(ds.x_train[va]),
                     y_val=t(ds.y_train[va]), x_test=t(ds.x_test), y_test=t(ds.y_test),
                     fingerprint=split.fingerprint())


def standardize(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-image standardization: (x - mean(x)) / std(x), over all pixels and channels of each
    image (paper section 2). The std is floored at 1/sqrt(#values) so flat images stay finite."""
    flat = x.flatten(1)
    mean = flat.mean(dim=1)
    std = flat.std(dim=1, unbiased=False).clamp_min(max(eps, flat.shape[1] ** -0.5))
    shape = (-1,) + (1,) * (x.dim() - 1)
    return (x - mean.view(shape)) / std.view(shape)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in [0, 1]: the form augmentation works on."""
    return images.permute(0, 3, 1, 2).float().div_(255.0)
