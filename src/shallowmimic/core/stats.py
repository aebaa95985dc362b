"""Uncertainty for every comparison of the study: paired bootstrap confidence intervals on
per-test-image correctness, and the three-way verdicts built on them.

A model is summarized by its correctness vector c in {0, 1}^n over the n test images; a
setting (one family at one budget with one loss) by the matrix C of its models (one row per
seed). Its accuracy is mean(C). A difference between two settings A and B is

    d = mean(C_A) - mean(C_B)

and its 95% interval comes from a paired bootstrap: each resample draws n test images with
replacement (the same images for A and B, which is what pairs them) and, when a setting has
several models, draws its models with replacement too (so seed-to-seed variation widens the
interval). The interval is the 2.5th to 97.5th percentile of the resampled differences.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np

from shallowmimic.core.errors import UserError

RESAMPLES = 2000
LEVEL = 0.95


def pack_correct(correct: np.ndarray) -> np.ndarray:
    """Bool (n,) -> uint8 (ceil(n / 8),): one bit per test image."""
    return np.packbits(np.asarray(correct, dtype=bool))


def unpack_correct(packed: np.ndarray, n: int) -> np.ndarray:
    return np.unpackbits(np.asarray(packed, dtype=np.uint8), count=n).astype(bool)


def encode_correct(correct) -> str:
    """Bool (n,) -> base64 text of the packed bits: how results and manifests store it."""
    return base64.b64encode(pack_correct(correct).tobytes()).decode("ascii")


def decode_correct(text: str, n: int) -> np.ndarray:
    return unpack_correct(np.frombuffer(base64.b64decode(text), dtype=np.uint8), n)


def _as_matrix(c) -> np.ndarray:
    c = np.asarray(c, dtype=bool)
    if c.ndim == 1:
        c = c[None, :]
    if c.ndim != 2 or c.shape[0] < 1:
        raise UserError(f"correctness must be a vector or a (models, images) matrix, got shape {c.shape}")
    return c


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval (fractions, not percent)."""

    value: float
    lo: float
    hi: float

    def pct(self, signed: bool = False) -> str:
        f = "+.2f" if signed else ".2f"
        return f"{100 * self.value:{f}} [{100 * self.lo:{f}}, {100 * self.hi:{f}}]"


def _resampled_means(c: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Accuracy of setting `c` under each image resample (`counts`: how often each image is
    drawn, one row per resample), with its models resampled too when there are several."""
    # correct . counts / n: a matmul, exact in float32 (integer sums below 2^24), and far faster
    # than gathering c[:, idx]
    per_model = (c.astype(np.float32) @ counts.T).astype(np.float64) / counts.shape[1]  # (models, resamples)
    m = c.shape[0]
    if m == 1:
        return per_model[0]
    pick = rng.integers(0, m, size=(m, counts.shape[0]))
    return np.take_along_axis(per_model, pick, axis=0).mean(axis=0)


def bootstrap_diff(a, b, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL,
                   chunk: int = 250) -> Interval:
    """mean(a) - mean(b) with a paired-bootstrap interval; `a`, `b` are correctness vectors or
    (models, images) matrices over the same test images."""
    a, b = _as_matrix(a), _as_matrix(b)
    if a.shape[1] != b.shape[1]:
        raise UserError(f"paired bootstrap needs the same test images: {a.shape[1]} vs {b.shape[1]}")
    n = a.shape[1]
    rng = np.random.Generator(np.random.PCG64(seed))
    diffs = []
    for start in range(0, resamples, chunk):
        r = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(r, n))
        counts = np.bincount((idx + n * np.arange(r)[:, None]).ravel(), minlength=r * n)
        counts = counts.reshape(r, n).astype(np.float32)
        diffs.append(_resampled_means(a, counts, rng) - _resampled_means(b, counts, rng))
    d = np.concatenate(diffs)
    tail = 100 * (1 - level) / 2
    return Interval(float(a.mean() - b.mean()), float(np.percentile(d, tail)), float(np.percentile(d, 100 - tail)))


def bootstrap_mean(c, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
    """A setting's accuracy with its bootstrap interval (images, and models when several)."""
    c = _as_matrix(c)
    return bootstrap_diff(c, np.zeros((1, c.shape[1]), dtype=bool), resamples, seed, level)


# --- verdicts --------------------------------------------------------------------------------

#: How a comparison counts toward its finding's verdict.
#: deciding: must be significant in the paper's direction for a PASS;
#: guard:    must only not be significantly reversed (e.g. adjacent conv depths).
ROLES = ("deciding", "guard")


@dataclass(frozen=True)
class Comparison:
    """`better` should beat `worse` according to the paper; `diff` = better - worse."""

    better: str
    worse: str
    diff: Interval
    role: str = "deciding"

    @property
    def significant(self) -> bool:
        return self.diff.lo > 0 or self.diff.hi < 0

    @property
    def agrees(self) -> bool:
        """Significantly in the paper's direction."""
        return self.diff.lo > 0

    @property
    def reversed(self) -> bool:
        """Significantly against the paper's direction."""
        return self.diff.hi < 0

    def line(self) -> str:
        mark = "agrees" if self.agrees else "REVERSED" if self.reversed else "not significant"
        role = "" if self.role == "deciding" else f", {self.role}"
        return f"{self.better} - {self.worse} = {self.diff.pct(signed=True)} ({mark}{role})"


def compare(better: str, worse: str, a, b, role: str = "deciding", seed: int = 0,
            resamples: int = RESAMPLES) -> Comparison:
    if role not in ROLES:
        raise ValueError(f"unknown comparison role {role!r}")
    return Comparison(better, worse, bootstrap_diff(a, b, resamples, seed), role)


def verdict(comparisons: list[Comparison]) -> str:
    """FAIL if any comparison is significantly reversed; PASS if every deciding comparison is
    significantly in the paper's direction; INCONCLUSIVE otherwise (or with nothing to decide)."""
    if any(c.reversed for c in comparisons):
        return "FAIL"
    deciding = [c for c in comparisons if c.role == "deciding"]
    if deciding and all(c.agrees for c in deciding):
        return "PASS"
    return "INCONCLUSIVE"
