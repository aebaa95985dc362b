"""The paper's augmentation as batched tensor code: HSV jitter, horizontal flip, and a random
crop of side S ~ U(0.75 W, W) rescaled to full size with bicubic interpolation.

There is one code path with two ways in:
- `sample_params(n, ...)` draws fresh per-image parameters from a seeded generator;
- `apply(images, params)` renders images from explicit parameters (the *replay* mode).
`augment` is `apply(images, sample_params(...))`, so a stored `AugParams` record replays the
exact images it was sampled for.

The record (`AugParams`) is 18 bytes per image and is what the transfer set stores:
- `hsv`  float16 (N, 5): hue shift, saturation shift, value shift, saturation scale, value
  scale. Sampled values are rounded to float16 *before* use, so replay is bit-exact.
- `geom` int16 (N, 4): flip (0/1), crop side S in pixels, crop left x0, crop top y0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class HSVConstants:
    """Paper section 2: hue shift ~U(-dh, dh); saturation/value shift ~U(-ds, ds)/U(-dv, dv) and
    global scale ~U(1/(1+as_), 1+as_)/U(1/(1+av), 1+av). `scales = "log-uniform"` draws the
    scales uniformly in log space instead (1/(1+a) and 1+a equally likely; not the protocol)."""

    dh: float
    ds: float
    dv: float
    as_: float
    av: float
    scales: str = "uniform"  # uniform (PROTOCOL section 2) | log-uniform

    def __post_init__(self):
        if self.scales not in ("uniform", "log-uniform"):
            raise ValueError(f"HSV scales must be uniform or log-uniform, got {self.scales!r}")


#: The fixed constants used for students and the transfer set (PROTOCOL section 2).
STUDENT_HSV = HSVConstants(dh=0.06, ds=0.26, dv=0.20, as_=0.21, av=0.13)
#: Midpoints of the teachers' search ranges, the default for teachers trained outside a search.
TEACHER_HSV = HSVConstants(dh=0.07, ds=0.25, dv=0.10, as_=0.25, av=0.115)
#: No colour change at all.
NO_HSV = HSVConstants(0.0, 0.0, 0.0, 0.0, 0.0)

HSV_FIELDS = ("hue_shift", "sat_shift", "val_shift", "sat_scale", "val_scale")
GEOM_FIELDS = ("flip", "size", "x0", "y0")


@dataclass(frozen=True)
class AugParams:
    hsv: torch.Tensor  # float16 (N, 5)
    geom: torch.Tensor  # int16 (N, 4)

    def __len__(self) -> int:
        return self.hsv.shape[0]

    def __getitem__(self, idx) -> AugParams:
        return AugParams(self.hsv[idx], self.geom[idx])

    def to(self, device) -> AugParams:
        return AugParams(self.hsv.to(device), self.geom.to(device))

    def numpy(self) -> dict[str, np.ndarray]:
        return {"hsv": self.hsv.cpu().numpy(), "geom": self.geom.cpu().numpy()}

    @staticmethod
    def from_numpy(d: dict[str, np.ndarray]) -> AugParams:
        return AugParams(torch.from_numpy(d["hsv"]), torch.from_numpy(d["geom"]))

    @staticmethod
    def identity(n: int, size: int) -> AugParams:
        hsv = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0], dtype=torch.float16).repeat(n, 1)
        geom = torch.tensor([0, size, 0, 0], dtype=torch.int16).repeat(n, 1)
        return AugParams(hsv, geom)


def min_crop(size: int) -> int:
    """Smallest crop side: 24 for 32-pixel images, the same 3/4 ratio for other sizes."""
    return max(1, round(0.75 * size))


def sample_params(
    n: int,
    size: int,
    hsv: HSVConstants,
    generator: torch.Generator,
    flip: bool = True,
    crop: bool = True,
) -> AugParams:
    """Draw per-image parameters on the CPU (cheap, and identical whatever device renders)."""
    g = generator
    u = torch.rand(n, 5, generator=g, dtype=torch.float64)
    a = torch.tensor([hsv.as_, hsv.av], dtype=torch.float64)
    if hsv.scales == "uniform":
        scale_lo, scale_hi = 1 / (1 + a), 1 + a
    else:  # uniform in log space, then exponentiated
        scale_lo, scale_hi = -torch.log1p(a), torch.log1p(a)
    lo = torch.cat([torch.tensor([-hsv.dh, -hsv.ds, -hsv.dv], dtype=torch.float64), scale_lo])
    hi = torch.cat([torch.tensor([hsv.dh, hsv.ds, hsv.dv], dtype=torch.float64), scale_hi])
    vals = lo + (hi - lo) * u
    if hsv.scales == "log-uniform":
        vals[:, 3:] = vals[:, 3:].exp()
    flips = (torch.rand(n, generator=g) < 0.5) if flip else torch.zeros(n, dtype=torch.bool)
    if crop:
        s = torch.randint(min_crop(size), size + 1, (n,), generator=g)
        # Position uniform over the valid offsets 0..size-S, independently for x and y.
        x0 = (torch.rand(n, generator=g) * (size - s + 1)).floor().long()
        y0 = (torch.rand(n, generator=g) * (size - s + 1)).floor().long()
    else:
        s = torch.full((n,), size)
        x0 = y0 = torch.zeros(n, dtype=torch.long)
    geom = torch.stack([flips.long(), s, x0, y0], dim=1).to(torch.int16)
    return AugParams(vals.to(torch.float16), geom)


def apply(images: torch.Tensor, params: AugParams) -> torch.Tensor:
    """Render augmented images. `images`: float NCHW in [0, 1] on any device; returns the same."""
    if images.shape[0] != len(params):
        raise ValueError(f"{images.shape[0]} images but {len(params)} augmentation records")
    params = params.to(images.device)
    # On CPU, small chunks keep the many elementwise HSV passes in cache (about 3x faster).
    chunk = _CPU_CHUNK if images.device.type == "cpu" else images.shape[0]
    outs = []
    for i in range(0, images.shape[0], max(chunk, 1)):
        p = params[i : i + chunk]
        outs.append(_flip_crop(_hsv_jitter(images[i : i + chunk], p.hsv.to(images.dtype)), p.geom))
    return torch.cat(outs) if len(outs) != 1 else outs[0]


_CPU_CHUNK = 256


def augment(images, hsv, generator, flip=True, crop=True) -> tuple[torch.Tensor, AugParams]:
    params = sample_params(images.shape[0], images.shape[-1], hsv, generator, flip, crop)
    return apply(images, params), params


# --- the two stages ------------------------------------------------------------------------------


def _hsv_jitter(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    h, s, v = rgb_to_hsv(x)
    col = lambda i: p[:, i].view(-1, 1, 1)  # noqa: E731
    h = (h + col(0)).remainder_(1.0)
    s = torch.addcmul(col(1), s, col(3)).clamp_(0.0, 1.0)  # s * scale + shift
    v = torch.addcmul(col(2), v, col(4)).clamp_(0.0, 1.0)
    return hsv_to_rgb(h, s, v)


def _flip_crop(x: torch.Tensor, geom: torch.Tensor) -> torch.Tensor:
    """Flip and crop-rescale in one bicubic `grid_sample`: each image gets an affine map from
    output pixel centres to the centres of its crop window (mirrored when flipped)."""
    n, _, size, _ = x.shape
    g = geom.to(x.dtype)
    flip, s, x0, y0 = g.unbind(1)
    scale = s / size
    # Normalized coordinates (align_corners=False): the window [x0, x0+S) has centre x0 + S/2.
    cx = (2 * x0 + s) / size - 1
    cy = (2 * y0 + s) / size - 1
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = scale * (1 - 2 * flip)
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = scale
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return out.clamp_(0.0, 1.0)  # bicubic overshoots at edges


# --- colour space ---------------------------------------------------------------------------------


def rgb_to_hsv(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NCHW RGB in [0, 1] -> (h, s, v), each NHW in [0, 1] (hue as a fraction of a turn)."""
    r, g, b = rgb.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    delta = maxc - minc
    inv = torch.where(delta > 0, delta, 1.0).reciprocal_()
    h = torch.where(
        r == maxc,
        (g - b) * inv,
        torch.where(g == maxc, (b - r) * inv + 2.0, (r - g) * inv + 4.0),
    )
    h = h.div_(6.0).remainder_(1.0)
    s = delta / torch.where(maxc > 0, maxc, 1.0)
    return h, s, maxc


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_to_hsv`, branch-free: c(n) = v - v*s*clamp(min(k, 4-k), 0, 1),
    k = (n + 6h) mod 6, for n = 5, 3, 1 giving R, G, B."""
    n = torch.tensor([5.0, 3.0, 1.0], dtype=h.dtype, device=h.device).view(1, 3, 1, 1)
    k = (n + 6.0 * h.unsqueeze(1)).remainder_(6.0)
    w = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return v.unsqueeze(1) - (v * s).unsqueeze(1) * w


# --- the fast teachers' light augmentation --------------------------------------------------------


def flip_translate(images: torch.Tensor, flip: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor,
                   pad: int) -> torch.Tensor:
    """Horizontal flip where `flip`, then a shift by (dx - pad, dy - pad) pixels with reflected
    borders, batched (no per-image loop). `images` float NCHW; `dx`, `dy` ints in [0, 2 pad]."""
    x = torch.where(flip.to(images.device).view(-1, 1, 1, 1), images.flip(3), images)
    if pad == 0:
        return x
    n, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dev = x.device
    rows = (dy.to(dev).view(-1, 1) + torch.arange(h, device=dev)).view(n, 1, h, 1)
    cols = (dx.to(dev).view(-1, 1) + torch.arange(w, device=dev)).view(n, 1, 1, w)
    return xp[torch.arange(n, device=dev).view(n, 1, 1, 1), torch.arange(c, device=dev).view(1, c, 1, 1), rows, cols]


def alternating_flips(n: int, epoch: int, generator: torch.Generator) -> torch.Tensor:
    """airbench's alternating flip: a random flip per image in epoch 0, its opposite in every
    odd epoch and the same again in every even one, so consecutive epochs see both sides.
    `generator` must be seeded the same way for every epoch (it draws the base flips)."""
    base = torch.rand(n, generator=generator) < 0.5
    return base ^ bool(epoch % 2)
