"""A spec in the paper's notation (`models.notation`) built as a torch network: conv, pool, fc and
linear layers, the fast teachers' whitening stem and conv groups, and test-time augmentation."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from shallowmimic.core.errors import UserError
from shallowmimic.models.notation import Arch, BuildOptions, pool_out


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
            _add_pool(mods, lay.kernel, opts.pool_dropout[pools] if pools < len(opts.pool_dropout) else 0.0)
            s = pool_out(s, lay.kernel)
            pools += 1
        else:
            flat = _add_dense(mods, lay, opts, (c, s, s), flat)
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


def _add_pool(mods: list[nn.Module], kernel: int, dropout: float) -> None:
    pool = nn.MaxPool2d(kernel, stride=2, padding=(kernel - 1) // 2)
    # max-pool and ReLU commute, so pool first: the ReLU and its backward then run on a map 4x
    # smaller (these memory-bound passes dominate a small student's step on CPU). Both are
    # parameter-free, so weight names are unchanged.
    if isinstance(mods[-1], nn.ReLU):
        mods.insert(len(mods) - 1, pool)
    else:
        mods.append(pool)
    if dropout > 0:
        mods.append(nn.Dropout(dropout))


def _add_dense(mods: list[nn.Module], lay, opts: BuildOptions, shape: tuple[int, int, int], flat: int | None) -> int:
    """An fc or linear layer; the first one reads the conv maps (`shape`) directly. Returns its width."""
    first = flat is None
    if first:
        mods.append(nn.Identity())  # keeps the weight names of models saved with nn.Flatten here
        flat = shape[0] * shape[1] * shape[2]
    linear = partial(FlatLinear, shape=shape) if first else nn.Linear
    if lay.kind == "fc":
        mods.append(linear(flat, lay.width))
        if opts.batchnorm:
            mods.append(nn.BatchNorm1d(lay.width))
        mods.append(nn.ReLU(inplace=True))
        if opts.fc_dropout > 0:
            mods.append(nn.Dropout(opts.fc_dropout))
    else:
        mods.append(linear(flat, lay.width, bias=False))
    return lay.width


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
