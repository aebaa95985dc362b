"""The bootstrap and the verdict logic on synthetic correctness vectors with known gaps."""

import numpy as np
import pytest

from shallowmimic.core.stats import (
    Comparison,
    Interval,
    bootstrap_diff,
    bootstrap_mean,
    compare,
    pack_correct,
    unpack_correct,
    verdict,
)

N = 10_000


def model(acc: float, seed: int, base: np.ndarray | None = None, flip: float = 0.0) -> np.ndarray:
    """A correctness vector with accuracy `acc`; with `base`, a model that agrees with `base`
    except on a `flip` fraction of images (models of one test set are strongly correlated)."""
    rng = np.random.default_rng(seed)
    if base is None:
        return rng.random(N) < acc
    c = base.copy()
    flips = rng.random(N) < flip
    c[flips] = rng.random(flips.sum()) < acc
    return c


def test_pack_roundtrip_one_bit_per_image():
    c = np.random.default_rng(0).random(10_001) < 0.7
    packed = pack_correct(c)
    assert packed.dtype == np.uint8 and len(packed) == 1251
    assert np.array_equal(unpack_correct(packed, len(c)), c)


def test_interval_covers_true_gap_and_is_paired():
    base = model(0.80, 0)
    better = base.copy()
    wrong = np.flatnonzero(~base)[:200]  # exactly 2 points better, on the same images
    better[wrong] = True
    d = bootstrap_diff(better, base)
    assert d.value == pytest.approx(0.02)
    assert 0 < d.lo < 0.02 < d.hi
    # paired: the interval is far narrower than for independent models' 0.45-point SEs
    assert d.hi - d.lo < 0.01


def test_identical_models_give_zero_gap():
    c = model(0.7, 1)
    d = bootstrap_diff(c, c)
    assert d.value == d.lo == d.hi == 0.0


def test_mean_interval_brackets_accuracy():
    c = model(0.6, 2)
    m = bootstrap_mean(c)
    assert m.lo < c.mean() < m.hi
    assert 0.015 < m.hi - m.lo < 0.025  # about 4 standard errors of sqrt(.24/1e4) = 0.49 points


def test_seed_variation_widens_the_interval():
    base = model(0.8, 3)
    a = np.stack([model(0.8, 10 + s, base, 0.3) for s in range(1)])
    many = np.stack([model(0.8 if s % 2 else 0.83, 20 + s, base, 0.3) for s in range(4)])
    one = bootstrap_diff(many[:1], a)
    several = bootstrap_diff(many, a)
    assert several.hi - several.lo > one.hi - one.lo


def test_mismatched_images_are_a_clear_error():
    from shallowmimic.core.errors import UserError

    with pytest.raises(UserError, match="same test images"):
        bootstrap_diff(np.ones(10, bool), np.ones(11, bool))


def _correlated(gap: float, seed: int):
    base = model(0.75, seed)
    a = model(0.75, seed + 1, base, 0.25)
    b = model(0.75 + gap / 0.25, seed + 2, base, 0.25)  # the flipped quarter carries the gap
    return b, a


def test_true_two_point_gap_passes():
    better, worse = _correlated(0.02, 100)
    assert verdict([compare("b", "a", better, worse)]) == "PASS"


def test_equal_models_are_inconclusive():
    a, b = _correlated(0.0, 200)
    assert verdict([compare("b", "a", a, b)]) == "INCONCLUSIVE"


def test_reversed_gap_fails():
    better, worse = _correlated(0.02, 300)
    assert verdict([compare("claimed better", "claimed worse", worse, better)]) == "FAIL"


def _cmp(lo, hi, role="deciding"):
    return Comparison("x", "y", Interval((lo + hi) / 2, lo, hi), role)


def test_guard_comparisons_only_need_to_not_be_reversed():
    assert verdict([_cmp(0.01, 0.03), _cmp(-0.01, 0.01, "guard")]) == "PASS"
    assert verdict([_cmp(0.01, 0.03), _cmp(-0.02, -0.005, "guard")]) == "FAIL"


def test_one_unclear_deciding_comparison_is_inconclusive():
    assert verdict([_cmp(0.01, 0.03), _cmp(-0.001, 0.02)]) == "INCONCLUSIVE"
    assert verdict([]) == "INCONCLUSIVE"
    assert verdict([_cmp(-0.01, 0.01, "guard")]) == "INCONCLUSIVE"


def test_bootstrap_is_reproducible():
    a, b = _correlated(0.01, 400)
    assert bootstrap_diff(a, b, seed=5) == bootstrap_diff(a, b, seed=5)


def test_bootstrap_equals_the_definition_by_resampled_images():
    """The fast path (image counts times correctness, one matmul) must give exactly the interval
    of the definition: draw image indices, average the drawn images, resample models."""
    rng = np.random.default_rng(3)
    a, b = rng.random((3, 500)) < 0.7, rng.random((1, 500)) < 0.65
    resamples, chunk, seed = 300, 100, 11

    def naive_means(c, idx, gen):
        per_model = c[:, idx].mean(axis=2)
        if c.shape[0] == 1:
            return per_model[0]
        pick = gen.integers(0, c.shape[0], size=(c.shape[0], idx.shape[0]))
        return np.take_along_axis(per_model, pick, axis=0).mean(axis=0)

    gen = np.random.Generator(np.random.PCG64(seed))
    diffs = []
    for _ in range(resamples // chunk):
        idx = gen.integers(0, 500, size=(chunk, 500))
        diffs.append(naive_means(a, idx, gen) - naive_means(b, idx, gen))
    d = np.concatenate(diffs)
    got = bootstrap_diff(a, b, resamples=resamples, seed=seed, chunk=chunk)
    want = (float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5)))
    assert (got.lo, got.hi) == pytest.approx(want, rel=1e-12, abs=1e-15)  # equal up to float rounding
