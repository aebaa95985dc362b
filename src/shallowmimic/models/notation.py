"""The paper's compact architecture notation: parse, print and count (pure arithmetic, no torch;
`models.layers` builds the network).

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

from shallowmimic.core.errors import UserError

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
