import numpy as np
import pytest
import torch

from shallowmimic.augment import transforms as A
from shallowmimic.data.split import make_split, standardize, to_float


def images(n=64, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_replay_reproduces_sampled_images_bit_for_bit():
    x = images()
    out, params = A.augment(x, A.STUDENT_HSV, torch.Generator().manual_seed(3))
    stored = A.AugParams.from_numpy(params.numpy())  # through the compact on-disk record
    assert stored.hsv.dtype == torch.float16 and stored.geom.dtype == torch.int16
    assert torch.equal(A.apply(x, stored), out)
    # and in a different batching: the record is per image
    assert torch.equal(torch.cat([A.apply(x[:10], stored[:10]), A.apply(x[10:], stored[10:])]), out)


def test_same_seed_same_params_other_seed_differs():
    p1 = A.sample_params(100, 32, A.STUDENT_HSV, torch.Generator().manual_seed(1))
    p2 = A.sample_params(100, 32, A.STUDENT_HSV, torch.Generator().manual_seed(1))
    p3 = A.sample_params(100, 32, A.STUDENT_HSV, torch.Generator().manual_seed(2))
    assert torch.equal(p1.hsv, p2.hsv) and torch.equal(p1.geom, p2.geom)
    assert not torch.equal(p1.hsv, p3.hsv)


@pytest.mark.parametrize("size", [32, 17])
def test_identity_parameters_are_the_identity(size):
    x = images(size=size)
    assert torch.allclose(A.apply(x, A.AugParams.identity(len(x), size)), x, atol=1e-5)


def test_zero_hsv_constants_without_crop_or_flip_is_identity():
    x = images()
    out, _ = A.augment(x, A.NO_HSV, torch.Generator().manual_seed(0), flip=False, crop=False)
    assert torch.allclose(out, x, atol=1e-5)


def test_flip_is_a_mirror():
    x = images(8)
    p = A.AugParams.identity(8, 32)
    p.geom[:, 0] = 1
    assert torch.allclose(A.apply(x, p), x.flip(-1), atol=1e-5)


def test_crop_samples_inside_the_window():
    x = torch.zeros(1, 3, 32, 32)
    x[..., 8:24, 8:24] = 0.5  # a 16x16 grey square; crop exactly it (bicubic reaches 2 px out)
    p = A.AugParams.identity(1, 32)
    p.geom[0, 1:] = torch.tensor([16, 8, 8])
    out = A.apply(x, p)
    assert torch.allclose(out[..., 3:-3, 3:-3], torch.full_like(out[..., 3:-3, 3:-3], 0.5), atol=1e-4)


def test_hsv_roundtrip_and_hue_shift_of_full_turn():
    x = images()
    assert torch.allclose(A.hsv_to_rgb(*A.rgb_to_hsv(x)), x, atol=1e-5)
    p = A.AugParams.identity(len(x), 32)
    p.hsv[:, 0] = 1.0  # a whole turn of hue changes nothing
    assert torch.allclose(A.apply(x, p), x, atol=1e-4)


def test_pure_red_hue_shift_by_a_third_is_green():
    x = torch.zeros(1, 3, 4, 4)
    x[:, 0] = 1.0
    p = A.AugParams.identity(1, 4)
    p.hsv[0, 0] = 1 / 3
    out = A.apply(x, p)
    assert torch.allclose(out[0, :, 1, 1], torch.tensor([0.0, 1.0, 0.0]), atol=2e-3)


def test_flip_rate_and_crop_distribution_match_their_definitions():
    n = 40_000
    p = A.sample_params(n, 32, A.STUDENT_HSV, torch.Generator().manual_seed(0))
    flip, s, x0, y0 = p.geom.long().unbind(1)
    sigma = (0.25 / n) ** 0.5
    assert abs(flip.float().mean().item() - 0.5) < 4 * sigma
    counts = torch.bincount(s, minlength=33)[24:33].numpy()
    assert s.min() >= 24 and s.max() <= 32 and counts.sum() == n
    expected = n / 9
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 26.1  # chi-square, 8 dof, p = 0.001
    assert (x0 >= 0).all() and (x0 + s <= 32).all() and (y0 + s <= 32).all()
    # offsets uniform over 0..32-S: for S=24 all 9 offsets occur with similar frequency
    off = torch.bincount(x0[s == 24], minlength=9).numpy()
    assert off.min() > 0.7 * off.mean()


def test_hsv_parameters_within_their_ranges():
    c = A.STUDENT_HSV
    p = A.sample_params(20_000, 32, c, torch.Generator().manual_seed(0)).hsv.float()
    for i, bound in enumerate((c.dh, c.ds, c.dv)):
        assert p[:, i].abs().max() <= bound + 1e-3 and p[:, i].abs().max() > 0.95 * bound
    for i, a in ((3, c.as_), (4, c.av)):
        lo, hi = 1 / (1 + a), 1 + a
        assert p[:, i].min() >= lo - 1e-3 and p[:, i].max() <= hi + 1e-3
        # PROTOCOL section 2: U(1/(1+a), 1+a), uniform in the scale itself (issue 9 item 6)
        assert abs(p[:, i].mean().item() - (lo + hi) / 2) < 0.003
        quarters = torch.histc(p[:, i], bins=4, min=lo, max=hi)
        assert quarters.min() > 0.9 * quarters.mean()


def test_log_uniform_scales_are_an_option():
    c = A.HSVConstants(**{**A.STUDENT_HSV.__dict__, "scales": "log-uniform"})
    p = A.sample_params(20_000, 32, c, torch.Generator().manual_seed(0)).hsv.float()
    for i in (3, 4):
        assert abs(p[:, i].log().mean().item()) < 0.01  # symmetric in log space
    with pytest.raises(ValueError, match="uniform or log-uniform"):
        A.HSVConstants(0.1, 0.1, 0.1, 0.1, 0.1, scales="normal")


def test_outputs_stay_in_range():
    x = images(512)
    x[:8] = 1.0
    x[8:16] = 0.0
    out, _ = A.augment(x, A.HSVConstants(0.5, 0.5, 0.5, 0.5, 0.5), torch.Generator().manual_seed(0))
    assert out.min() >= 0.0 and out.max() <= 1.0 and torch.isfinite(out).all()


def test_split_is_deterministic_disjoint_and_complete():
    a, b = make_split(1000, 200, seed=5), make_split(1000, 200, seed=5)
    assert np.array_equal(a.train, b.train) and a.fingerprint() == b.fingerprint()
    assert len(a.train) == 800 and len(a.val) == 200
    assert len(np.union1d(a.train, a.val)) == 1000 and not np.intersect1d(a.train, a.val).size
    assert make_split(1000, 200, seed=6).fingerprint() != a.fingerprint()


def test_split_size_validated():
    from shallowmimic.core.errors import UserError

    with pytest.raises(UserError, match="validation size"):
        make_split(100, 100)


def test_standardize_per_image():
    x = to_float(torch.randint(0, 256, (5, 8, 8, 3), dtype=torch.uint8)) * torch.arange(1, 6).view(5, 1, 1, 1)
    z = standardize(x)
    assert torch.allclose(z.flatten(1).mean(1), torch.zeros(5), atol=1e-5)
    assert torch.allclose(z.flatten(1).std(1, unbiased=False), torch.ones(5), atol=1e-4)
    flat = standardize(torch.full((1, 3, 4, 4), 0.3))
    assert torch.isfinite(flat).all() and flat.abs().max() < 1e-5
