"""Teachers this package did not train: an ONNX file (run by onnxruntime), a TorchScript file, or
a Python factory `package.module:function` with a safetensors weights file.

Each is identified by the digest of its file(s) and loaded as a module that takes what every
exported model here takes, uint8 NHWC images, and returns float32 logits; its entry says which
input the file itself expects (`uint8-nhwc`: raw pixels, as `shallowmimic export` writes;
`standardized-nchw`: float images standardized per image, as the networks here train on), and
the wrapper converts. `check` runs it once on two of the data's images, so a wrong input size or
number of classes is a one-line error before any work.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shallowmimic.core.errors import UserError
from shallowmimic.core.files import file_digest
from shallowmimic.data.split import standardize, to_float

INPUTS = ("uint8-nhwc", "standardized-nchw")
ONNX_SUFFIXES = (".onnx",)
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")


@dataclass(frozen=True)
class ExternalTeacher:
    """One entry of `teachers.external`: a file (`path`), or a factory and its weights."""

    path: str = ""  # an .onnx or a TorchScript file
    factory: str = ""  # "package.module:function" returning an nn.Module; with `weights`
    weights: str = ""  # the factory's safetensors weights
    input: str = "standardized-nchw"  # what the model expects: one of INPUTS

    def __post_init__(self):
        if self.input not in INPUTS:
            raise UserError(f"external teacher {self.name}: input {self.input!r} is not one of {', '.join(INPUTS)}")
        if bool(self.path) == bool(self.factory):
            raise UserError("an external teacher is a file (path = ...) or a factory (factory = ..., weights = ...), "
                            f"not {'both' if self.path else 'neither'}")
        if self.factory and (":" not in self.factory or not self.weights):
            raise UserError(f"external teacher {self.factory!r}: a factory is 'package.module:function' with "
                            "weights = a .safetensors file")
        if self.path and not self.path.lower().endswith(ONNX_SUFFIXES + TORCHSCRIPT_SUFFIXES):
            raise UserError(f"external teacher {self.path}: not an ONNX ({', '.join(ONNX_SUFFIXES)}) or TorchScript "
                            f"({', '.join(TORCHSCRIPT_SUFFIXES)}) file")

    @property
    def name(self) -> str:
        return self.path or self.factory

    def files(self) -> list[Path]:
        return [Path(p) for p in ((self.path,) if self.path else (self.weights,))]

    def digest(self) -> str:
        """sha256 over the file(s) and the entry (what the teacher computes from, never where it lies)."""
        h = hashlib.sha256(f"{self.factory}|{self.input}".encode())
        for f in self.files():
            if not f.is_file():
                raise UserError(f"external teacher {self.name}: {f}: no such file")
            h.update(file_digest(f).encode())
        return h.hexdigest()


class ExternalModel(torch.nn.Module):
    """uint8 NHWC images -> float32 logits, whatever the file expects."""

    def __init__(self, run, wants: str):
        super().__init__()
        self.run, self.wants = run, wants

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images if self.wants == "uint8-nhwc" else standardize(to_float(images))
        return self.run(x).float()


def load_external(entry: ExternalTeacher, recorded: str | None = None, device="cpu") -> ExternalModel:
    """The teacher of `entry`; `recorded`: the digest a study recorded for it, which its file(s)
    must still have (a teacher that changed would silently change the ensemble)."""
    digest = entry.digest()
    if recorded and digest != recorded:
        raise UserError(f"external teacher {entry.name}: its file changed since its digest was recorded "
                        f"({recorded[:12]} then, {digest[:12]} now); restore it or start a new study")
    if entry.factory:
        run = _from_factory(entry, device)
    elif entry.path.lower().endswith(ONNX_SUFFIXES):
        run = _from_onnx(Path(entry.path))
    else:
        try:
            run = torch.jit.load(entry.path, map_location=device).eval()
        except (RuntimeError, ValueError) as e:
            first = str(e).splitlines()[0]
            raise UserError(f"external teacher {entry.path}: not a TorchScript file ({first})") from None
    return ExternalModel(run, entry.input)


def _from_factory(entry: ExternalTeacher, device) -> torch.nn.Module:
    from safetensors.torch import load_file

    module, _, function = entry.factory.partition(":")
    try:
        make = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as e:
        raise UserError(f"external teacher {entry.factory}: cannot import it ({e})") from None
    from safetensors import SafetensorError

    try:
        net = make()
    except Exception as e:  # the user's code: whatever it raises is its message
        raise UserError(f"external teacher {entry.factory}: the factory failed ({type(e).__name__}: {e})") from None
    if not isinstance(net, torch.nn.Module):
        raise UserError(f"external teacher {entry.factory}: returned a {type(net).__name__}, not a torch.nn.Module")
    try:
        net.load_state_dict(load_file(entry.weights, device=str(device)))
    except (RuntimeError, OSError, SafetensorError) as e:
        raise UserError(f"external teacher {entry.factory}: the weights {entry.weights} do not fit "
                        f"({str(e).splitlines()[0]})") from None
    return net.to(device).eval()


def _from_onnx(path: Path):
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("an ONNX teacher needs onnxruntime: pip install onnxruntime") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for a broken file
        raise UserError(f"external teacher {path}: not a valid ONNX model ({str(e).strip()[:200]})") from None
    name = sess.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        try:
            out = sess.run(None, {name: x.cpu().numpy()})[0]
        except Exception as e:  # a wrong shape or type: onnxruntime's own exception types
            raise UserError(f"external teacher {path}: {str(e).strip().splitlines()[0][:300]}") from None
        return torch.from_numpy(np.asarray(out)).to(x.device)

    run.input_shape = sess.get_inputs()[0].shape
    return run


def check(model: ExternalModel, entry: ExternalTeacher, images: torch.Tensor, classes: int) -> None:
    """One-line errors for a teacher that cannot label these images: a different input size (read
    from the ONNX graph where it says), or another number of classes than the data has."""
    size = images.shape[1]
    shape = getattr(model.run, "input_shape", None)
    if shape and len(shape) == 4:
        spatial = [d for d in (shape[1:3] if entry.input == "uint8-nhwc" else shape[2:4]) if isinstance(d, int)]
        if spatial and spatial != [size] * len(spatial):
            raise UserError(f"external teacher {entry.name}: expects {'x'.join(map(str, spatial))} images, "
                            f"the data's are {size}x{size}")
    try:
        out = model(images[:2])
    except RuntimeError as e:
        raise UserError(f"external teacher {entry.name}: cannot run on {size}x{size} images "
                        f"({str(e).splitlines()[0][:200]})") from None
    if out.ndim != 2 or out.shape[1] != classes:
        raise UserError(f"external teacher {entry.name}: gives {tuple(out.shape[1:])} outputs per image, "
                        f"the data has {classes} classes")
