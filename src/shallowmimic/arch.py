"""The paper's compact architecture notation: parse, count, print, build.

Grammar (tokens joined by '-'; widths accept a `k` suffix: 30k = 30000, 1.2k = 1200):

| token        | meaning                                                      | example  |
| ------------ | ------------------------------------------------------------ | -------- |
| `Wc[R][@K]`  | R conv layers (default 1) of W filters, KxK (default 3), ReLU | `76c2`, `64c@5` |
| `mp[K]`, `p` | KxK max-pool (default 2), stride 2                            | `mp`, `mp3` |
| `Wfc[R]`     | R fully-connected ReLU layers of W units                      | `1200fc2` |
| `WL`         | a linear bottleneck layer of W units (no bias, no ReLU)       | `1200L`  |
| `W`          | one fully-connected ReLU layer (Ba & Caruana's notation)      | `30k`    |
| `Ww@K`       | patch-whitening stem: W = 2*C*K*K frozen KxK filters (no padding), set from data | `24w@2` |
| `Wg`         | a fast conv group: conv3x3 - maxpool2 - BN - act - conv3x3 - BN - act (airbench) | `64g` |
| `gmp`        | global max-pool                                               | `gmp`    |

The input (channels, size) and the class count come from the data; the final `classes`-way
linear output layer is always appended. Convolutions keep the spatial size ('same' padding);
every pool halves it (rounding up for odd sizes with 3x3 windows).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from .errors import UserError

_WIDTH = r"(\d+(?:\.\d+)?k?)"
_PATTERNS = [
    ("conv", re.compile(rf"^{_WIDTH}c(\d+)?(?:@(\d+))?$")),
    ("whiten", re.compile(r"^(\d+)w(?:@(\d+))?$")),
    ("group", re.compile(rf"^{_WIDTH}g$")),
    ("gpool", re.compile(r"^gmp$")),
    ("pool", re.compile(r"^(?:mp|p)(\d+)?$")),
    ("fc", re.compile(rf"^{_WIDTH}fc(\d+)?$")),
    ("linear", re.compile(rf"^{_WIDTH}(?:l|lin)$")),
    ("hidden", re.compile(rf"^{_WIDTH}$")),
]
_EXAMPLES = "e.g. 64c2, 64c@5, mp, mp3, 1200fc2, 1200L, 30k, 24w@2, 64g, gmp"


@dataclass(frozen=True)
class Layer:
    kind: str  # conv | pool | fc | linear | whiten | group | gpool
    width: int = 0  # filters or units; pool: 0
    kernel: int = 0  # conv kernel or pool window


@dataclass(frozen=True)
class Arch:
    layers: tuple[Layer, ...]
    spec: str = field(default="", compare=False)

    def __str__(self) -> str:
        return self.spec or format_spec(self.layers)


@dataclass(frozen=True)
class BuildOptions:
    """How a spec becomes a network beyond its shape: what the teacher/student families vary."""

    batchnorm: bool = False
    pool_dropout: tuple[float, ...] = ()  # one rate per pool, in order (paper: DOc1..3)
    fc_dropout: float = 0.0  # after each fc ReLU layer (paper: DOf)
    init_scale: float = 1.0  # Glorot initialization times this
    input_scale: float = 1.0  # students multiply their input by this
    activation: str = "relu"  # relu | gelu
    dirac_init: bool = False  # conv layers start as identity on their first in-channels (airbench)
    head_scale: float = 1.0  # the output layer's logits times this (airbench: 1/9)
    tta: str = "none"  # test-time augmentation in eval mode: none | flip | flip-translate


def _width(text: str, spec: str, token: str) -> int:
    value = float(text[:-1]) * 1000 if text.endswith("k") else float(text)
    if value != int(value) or value < 1:
        raise UserError(f"invalid spec {spec!r}: width in {token!r} must be a positive whole number")
    return int(value)


def parse_spec(spec: str) -> Arch:
    """Parse the notation; a bad token gets a one-line error that shows where it is."""
    spec = spec.strip()
    if not spec:
        raise UserError("invalid spec '': empty (expected tokens joined by '-', " + _EXAMPLES + ")")
    tokens = spec.split("-")
    layers: list[Layer] = []
    for i, raw in enumerate(tokens):
        token = raw.strip().lower()
        marked = "-".join(f">>{t}<<" if j == i else t for j, t in enumerate(tokens))
        match = next(((k, p.match(token)) for k, p in _PATTERNS if p.match(token)), None)
        if match is None:
            raise UserError(f"invalid spec {marked}: {raw!r} is not a layer ({_EXAMPLES})")
        kind, m = match
        if kind == "gpool":
            layers.append(Layer("gpool"))
            continue
        if kind == "whiten":
            width, kernel = int(m.group(1)), int(m.group(2) or 2)
            if layers or kernel < 1:
                raise UserError(f"invalid spec {marked}: the whitening stem must come first, with a kernel >= 1")
            layers.append(Layer("whiten", width, kernel))
            continue
        if kind == "pool":
            window = int(m.group(1) or 2)
            if window < 2:
                raise UserError(f"invalid spec {marked}: pool window must be at least 2")
            layers.append(Layer("pool", 0, window))
            continue
        width = _width(m.group(1), marked, raw)
        if kind == "group":
            if any(lay.kind in ("fc", "linear") for lay in layers):
                raise UserError(f"invalid spec {marked}: conv group after a fully-connected layer")
            layers.append(Layer("group", width, 3))
        elif kind == "conv":
            repeat, kernel = int(m.group(2) or 1), int(m.group(3) or 3)
            if kernel % 2 == 0 or repeat < 1:
                raise UserError(f"invalid spec {marked}: conv needs an odd kernel and >= 1 layers")
            if any(lay.kind in ("fc", "linear") for lay in layers):
                raise UserError(f"invalid spec {marked}: conv layer after a fully-connected layer")
            layers += [Layer("conv", width, kernel)] * repeat
        elif kind == "fc" or kind == "hidden":
            repeat = int(m.group(2) or 1) if kind == "fc" else 1
            if repeat < 1:
                raise UserError(f"invalid spec {marked}: fc needs >= 1 layers")
            layers += [Layer("fc", width)] * repeat
        else:
            layers.append(Layer("linear", width))
    for j, lay in enumerate(layers):
        if lay.kind in ("pool", "gpool") and any(prev.kind in ("fc", "linear") for prev in layers[:j]):
            raise UserError(f"invalid spec {spec!r}: pool after a fully-connected layer")
    return Arch(tuple(layers), spec)


def format_spec(layers) -> str:
    """The compact notation of a layer list (the inverse of `parse_spec`, up to spelling)."""
    out: list[str] = []
    i = 0
    while i < len(layers):
        lay = layers[i]
        j = i
        while j + 1 < len(layers) and layers[j + 1] == lay and lay.kind in ("conv", "fc"):
            j += 1
        n = j - i + 1
        rep = str(n) if n > 1 else ""
        if lay.kind == "conv":
            out.append(f"{lay.width}c{rep}" + (f"@{lay.kernel}" if lay.kernel != 3 else ""))
        elif lay.kind == "pool":
            out.append("mp" if lay.kernel == 2 else f"mp{lay.kernel}")
        elif lay.kind == "whiten":
            out.append(f"{lay.width}w@{lay.kernel}")
        elif lay.kind == "group":
            out.append(f"{lay.width}g")
        elif lay.kind == "gpool":
            out.append("gmp")
        elif lay.kind == "fc":
            out.append(f"{lay.width}fc{rep}")
        else:
            out.append(f"{lay.width}L")
        i = j + 1
    return "-".join(out)


def pool_out(size: int, window: int) -> int:
    pad = (window - 1) // 2
    return (size + 2 * pad - window) // 2 + 1


def layer_table(
    arch: Arch, channels: int, size: int, classes: int, batchnorm: bool = False
) -> list[tuple[str, str, int]]:
    """(layer, output shape, parameters) per layer, output layer included. Pure arithmetic,
    so budgets can be solved without building anything."""
    rows = []
    c, s, flat = channels, size, None
    for lay in arch.layers:
        if lay.kind == "conv":
            n = lay.kernel * lay.kernel * c * lay.width + lay.width + (2 * lay.width if batchnorm else 0)
            c = lay.width
            rows.append((f"conv{lay.kernel}x{lay.kernel}", f"{c}x{s}x{s}", n))
        elif lay.kind == "whiten":
            if lay.width != 2 * c * lay.kernel ** 2:
                raise UserError(f"spec {arch}: a {lay.kernel}x{lay.kernel} whitening stem on {c} channels has "
                                f"{2 * c * lay.kernel ** 2} filters, not {lay.width}")
            n = lay.kernel * lay.kernel * c * lay.width + lay.width
            c, s = lay.width, s - lay.kernel + 1
            rows.append((f"whiten{lay.kernel}x{lay.kernel}", f"{c}x{s}x{s}", n))
        elif lay.kind == "group":
            n = 9 * c * lay.width + 9 * lay.width * lay.width + 4 * lay.width  # two convs, two BNs
            c, s = lay.width, pool_out(s, 2)
            rows.append(("conv group", f"{c}x{s}x{s}", n))
        elif lay.kind == "gpool":
            s = 1
            rows.append(("global maxpool", f"{c}x1x1", 0))
        elif lay.kind == "pool":
            s = pool_out(s, lay.kernel)
            if s < 1:
                raise UserError(f"spec {arch}: too many pools for {size}x{size} input images")
            rows.append((f"maxpool{lay.kernel}x{lay.kernel}", f"{c}x{s}x{s}", 0))
        else:
            fan_in = flat if flat is not None else c * s * s
            if lay.kind == "fc":
                n = fan_in * lay.width + lay.width + (2 * lay.width if batchnorm else 0)
            else:
                n = fan_in * lay.width
            flat = lay.width
            rows.append(("fc" if lay.kind == "fc" else "linear", str(flat), n))
    fan_in = flat if flat is not None else c * s * s
    rows.append(("output", str(classes), fan_in * classes + classes))
    return rows


def count_params(arch: Arch, channels: int, size: int, classes: int, batchnorm: bool = False) -> int:
    return sum(n for _, _, n in layer_table(arch, channels, size, classes, batchnorm))


class Scale(nn.Module):
    """Multiplies the input by a constant (the students' searched input scale)."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x * self.scale if self.scale != 1.0 else x

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def build(arch: Arch, channels: int, size: int, classes: int, opts: BuildOptions = BuildOptions()) -> nn.Sequential:
    """The network for a spec. Parameter count equals `count_params` (tested)."""
    mods: list[nn.Module] = [Scale(opts.input_scale)]
    c, s, flat = channels, size, None
    pools = 0
    act = _ACTIVATIONS[opts.activation]
    for lay in arch.layers:
        if lay.kind == "whiten":
            mods += [Whiten(c, lay.width, lay.kernel), act()]
            c, s = lay.width, s - lay.kernel + 1
        elif lay.kind == "group":
            mods.append(ConvGroup(c, lay.width, act))
            c, s = lay.width, pool_out(s, 2)
        elif lay.kind == "gpool":
            mods.append(nn.AdaptiveMaxPool2d(1))
            s = 1
        elif lay.kind == "conv":
            mods.append(nn.Conv2d(c, lay.width, lay.kernel, padding=lay.kernel // 2))
            if opts.batchnorm:
                mods.append(nn.BatchNorm2d(lay.width))
            mods.append(act(inplace=True) if act is nn.ReLU else act())
            c = lay.width
        elif lay.kind == "pool":
            pool = nn.MaxPool2d(lay.kernel, stride=2, padding=(lay.kernel - 1) // 2)
            # max-pool and ReLU commute, so pool first: the ReLU and its backward then run on a
            # map 4x smaller (these memory-bound passes dominate a small student's step on CPU).
            # Both are parameter-free, so weight names are unchanged.
            if isinstance(mods[-1], nn.ReLU):
                mods.insert(len(mods) - 1, pool)
            else:
                mods.append(pool)
            s = pool_out(s, lay.kernel)
            if pools < len(opts.pool_dropout) and opts.pool_dropout[pools] > 0:
                mods.append(nn.Dropout(opts.pool_dropout[pools]))
            pools += 1
        else:
            first = flat is None
            if first:
                mods.append(nn.Identity())  # keeps the weight names of models saved with nn.Flatten here
                flat = c * s * s
            linear = partial(FlatLinear, shape=(c, s, s)) if first else nn.Linear
            if lay.kind == "fc":
                mods.append(linear(flat, lay.width))
                if opts.batchnorm:
                    mods.append(nn.BatchNorm1d(lay.width))
                mods.append(nn.ReLU(inplace=True))
                if opts.fc_dropout > 0:
                    mods.append(nn.Dropout(opts.fc_dropout))
            else:
                mods.append(linear(flat, lay.width, bias=False))
            flat = lay.width
    if flat is None:
        mods.append(nn.Identity())
        mods.append(FlatLinear(c * s * s, classes, shape=(c, s, s)))
    else:
        mods.append(nn.Linear(flat, classes))
    if opts.head_scale != 1.0:
        mods.append(Scale(opts.head_scale))
    net = nn.Sequential(*mods)
    _glorot(net, opts.init_scale)
    if opts.dirac_init:
        for m in net.modules():
            if isinstance(m, nn.Conv2d) and not isinstance(m, Whiten):
                nn.init.dirac_(m.weight.data[: m.in_channels])
    if opts.tta not in TTA_MODES:
        raise UserError(f"unknown test-time augmentation {opts.tta!r} (known: {', '.join(TTA_MODES)})")
    return TTA(net, opts.tta) if opts.tta != "none" else net


TTA_MODES = ("none", "flip", "flip-translate")


def with_tta(net: nn.Module, mode: str) -> nn.Module:
    """The same weights under another test-time augmentation."""
    if mode not in TTA_MODES:
        raise UserError(f"unknown test-time augmentation {mode!r} (known: {', '.join(TTA_MODES)})")
    inner = net.net if isinstance(net, TTA) else net
    return TTA(inner, mode).train(inner.training) if mode != "none" else inner


class TTA(nn.Module):
    """In eval mode, averages the logits over flipped (and, with flip-translate, also 1-pixel
    shifted) views, as airbench does; in training mode it is the plain network."""

    def __init__(self, net: nn.Module, mode: str):
        super().__init__()
        self.net, self.mode = net, mode

    def extra_repr(self) -> str:  # the mode sets the cost (2 or 6 passes): part of the architecture
        return f"mode={self.mode}"

    def forward(self, x):
        if self.training:
            return self.net(x)
        out = 0.5 * (self.net(x) + self.net(x.flip(3)))
        if self.mode == "flip-translate":
            padded = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
            h, w = x.shape[2:]
            shifted = [padded[:, :, :h, :w], padded[:, :, 2:, 2:]]
            out = 0.5 * out + 0.125 * sum(self.net(v) + self.net(v.flip(3)) for v in shifted)
        return out


_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class FlatLinear(nn.Linear):
    """`Linear(flatten(x))` for an image-shaped input x (N, C, H, W): the same function and the
    same weights (in the usual C, H, W order), but computed in H, W, C order when x is
    channels_last, where that order is a free view. Flattening a channels_last map instead costs
    a copy each way, and the gradient that comes back in the other memory format sent the
    max-pool's backward down a slow path: 2.8x the step time of a conv1 student on CPU."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, shape: tuple = ()):
        super().__init__(in_features, out_features, bias)
        self.shape = tuple(shape)

    def forward(self, x):
        if (x.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last) or x.is_contiguous()
                or torch.onnx.is_in_onnx_export()):  # an exported graph is NCHW: the plain order is free there
            return super().forward(x.flatten(1))
        c, h, w = self.shape
        weight = self.weight.view(-1, c, h, w).permute(0, 2, 3, 1).reshape(self.out_features, -1)
        return nn.functional.linear(x.permute(0, 2, 3, 1).flatten(1), weight, self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", input={'x'.join(map(str, self.shape))}"


class Whiten(nn.Conv2d):
    """A frozen KxK conv whose filters are the +/- eigenvectors of the training patches'
    covariance, scaled to unit variance (airbench): the network starts on decorrelated input.
    Its weights are set by `init_whitening` from training images; only its bias trains."""

    def __init__(self, channels: int, width: int, kernel: int):
        super().__init__(channels, width, kernel, padding=0, bias=True)
        self.weight.requires_grad_(False)


class ConvGroup(nn.Sequential):
    """airbench's block: conv3x3 - maxpool2 - BN - act - conv3x3 - BN - act. BN scales are
    frozen at 1 (only shifts train) and running statistics move fast (momentum 0.6), which
    suits runs of a few epochs."""

    def __init__(self, cin: int, width: int, act):
        def bn():
            b = nn.BatchNorm2d(width, momentum=0.6, eps=1e-12)
            b.weight.requires_grad_(False)
            return b

        super().__init__(nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.MaxPool2d(2), bn(), act(),
                         nn.Conv2d(width, width, 3, padding=1, bias=False), bn(), act())


@torch.no_grad()
def init_whitening(net: nn.Module, images: torch.Tensor, eps: float = 5e-4) -> bool:
    """Set the whitening stem (if any) from float NCHW `images`; True if there was one."""
    stem = next((m for m in net.modules() if isinstance(m, Whiten)), None)
    if stem is None:
        return False
    k, c = stem.kernel_size[0], stem.in_channels
    x = images.to(stem.weight.device, torch.float32)
    patches = x.unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
    cov = patches.T @ patches / len(patches)
    values, vectors = torch.linalg.eigh(cov)
    filters = (vectors.T / torch.sqrt(values + eps)[:, None]).reshape(-1, c, k, k).flip(0)
    stem.weight.copy_(torch.cat([filters, -filters]).to(stem.weight.dtype))
    stem.bias.zero_()
    return True


@torch.no_grad()
def _glorot(net: nn.Module, scale: float) -> None:
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(m.weight, gain=scale)
            if m.bias is not None:
                m.bias.zero_()
