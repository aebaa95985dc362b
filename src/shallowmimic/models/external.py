"""Teachers this package did not train: an ONNX file (run by onnxruntime), a TorchScript file, a
torch.export file (`.pt2`), or a Python factory `package.module:function` with a safetensors
weights file.

Each is identified by the digest of its file(s) and loaded as a module that takes what every
exported model here takes, uint8 NHWC images (or, inside an ensemble, what the transfer set
renders: float NCHW in [0, 1]), and returns float32 logits; its entry says which input the file
itself expects (`uint8-nhwc`: raw pixels, as `shallowmimic export` writes; `standardized-nchw`:
float images standardized per image, as the networks here train on), and the wrapper converts.
A uint8 teacher in an ensemble sees the augmented image rounded to whole pixel values. It runs
in float32 whatever the study's precision (its numbers are its own). `check` runs it once on two
of the data's images, so a wrong input size or number of classes is a one-line error before any
work.
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
TAKES = ("uint8-nhwc", "unit-nchw")  # what the loaded module is fed: raw pixels, or floats in [0, 1]
FAMILY = "external"  # the `family` of an external teacher's model.json and result.json
ONNX_SUFFIXES = (".onnx",)
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")
EXPORT_SUFFIXES = (".pt2",)  # torch.export.save: TorchScript's successor


@dataclass(frozen=True)
class ExternalTeacher:
    """One entry of `teachers.external`: a file (`path`), or a factory and its weights."""

    path: str = ""  # an .onnx, TorchScript or .pt2 (torch.export) file
    factory: str = ""  # "package.module:function" returning an nn.Module; with `weights`
    weights: str = ""  # the factory's safetensors weights
    input: str = "standardized-nchw"  # what the model expects: one of INPUTS

    def __post_init__(self):
        if self.input not in INPUTS:
            raise UserError(f"external teacher {self.name}: input {self.input!r} is not one of {', '.join(INPUTS)}")
        if bool(self.path) == bool(self.factory):
            raise UserError("an external teacher is a file (path = ...) or a factory (factory = ..., weights = ...), "
                            f"not {'both' if self.path else 'neither'}")
        module, _, function = self.factory.partition(":")
        if self.factory and not (module and function and self.weights):
            raise UserError(f"external teacher {self.factory!r}: a factory is 'package.module:function' with "
                            "weights = a .safetensors file")
        if self.path and self.weights:
            raise UserError(f"external teacher {self.path}: weights = ... goes with a factory; a file holds its own")
        if self.path and not self.path.lower().endswith(ONNX_SUFFIXES + TORCHSCRIPT_SUFFIXES + EXPORT_SUFFIXES):
            raise UserError(f"external teacher {self.path}: not an ONNX ({', '.join(ONNX_SUFFIXES)}), TorchScript "
                            f"({', '.join(TORCHSCRIPT_SUFFIXES)}) or torch.export ({', '.join(EXPORT_SUFFIXES)}) file")

    @classmethod
    def from_text(cls, text: str) -> ExternalTeacher:
        """A bare string in `teachers.external`: a file, with the default input convention."""
        return cls(path=text)

    @property
    def name(self) -> str:
        return self.path or self.factory

    def resolved(self) -> ExternalTeacher:
        """The entry with absolute file names (what a study records, to load it from anywhere)."""
        absolute = lambda p: str(Path(p).resolve()) if p else p  # noqa: E731
        return ExternalTeacher(absolute(self.path), self.factory, absolute(self.weights), self.input)

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
    """Images as `takes` says (uint8 NHWC, or float NCHW in [0, 1]) -> float32 logits, whatever
    the file expects (`wants`)."""

    def __init__(self, run, wants: str, takes: str = "uint8-nhwc", params: int = 0):
        super().__init__()
        self.run, self.wants, self.takes, self.params = run, wants, takes, params

    def train(self, mode: bool = True) -> ExternalModel:
        """Left as loaded (in eval mode): a teacher here only labels, and an exported program
        refuses train() and eval() alike."""
        self.training = mode
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        unit = images if self.takes == "unit-nchw" else to_float(images)
        if self.wants == "standardized-nchw":
            x = standardize(unit)
        elif self.takes == "unit-nchw":  # whole pixel values, as a uint8 file reads them
            x = (unit * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        else:
            x = images
        with torch.autocast(x.device.type, enabled=False):  # its own numbers: run as given, in fp32
            return self.run(x).float()


def load_external(entry: ExternalTeacher, recorded: str | None = None, device="cpu",
                  takes: str = "uint8-nhwc") -> ExternalModel:
    """The teacher of `entry`; `recorded`: the digest a study recorded for it, which its file(s)
    must still have (a teacher that changed would silently change the ensemble); `takes`: what
    it will be fed (one of TAKES)."""
    if takes not in TAKES:
        raise ValueError(f"takes must be one of {TAKES}, got {takes!r}")
    digest = entry.digest()
    if recorded and digest != recorded:
        raise UserError(f"external teacher {entry.name}: its file changed since its digest was recorded "
                        f"({recorded[:12]} then, {digest[:12]} now); restore it or start a new study")
    if entry.factory:
        run = _from_factory(entry, device)
    elif entry.path.lower().endswith(ONNX_SUFFIXES):
        run = _from_onnx(Path(entry.path))
    elif entry.path.lower().endswith(EXPORT_SUFFIXES):
        run = _from_export(Path(entry.path), device)
    else:
        try:
            run = torch.jit.load(entry.path, map_location=device).eval()
        except (RuntimeError, ValueError) as e:
            first = str(e).splitlines()[0]
            raise UserError(f"external teacher {entry.path}: not a TorchScript file ({first})") from None
    params = sum(p.numel() for p in run.parameters()) if isinstance(run, torch.nn.Module) else run.params
    return ExternalModel(run, entry.input, takes, int(params))


def _from_factory(entry: ExternalTeacher, device) -> torch.nn.Module:
    from safetensors.torch import load_file

    module, _, function = entry.factory.partition(":")
    try:
        make = getattr(importlib.import_module(module), function)
    except Exception as e:  # the user's module: a missing name, or whatever its import raises
        raise UserError(f"external teacher {entry.factory}: cannot import it ({type(e).__name__}: {e}); "
                        "its module must be installed or on PYTHONPATH") from None
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


def _from_export(path: Path, device) -> torch.nn.Module:
    try:
        program = torch.export.load(str(path))
    except Exception as e:  # a damaged or foreign archive: torch raises several kinds
        raise UserError(f"external teacher {path}: not a torch.export file ({str(e).splitlines()[0][:200]})") from None
    from torch.export.passes import move_to_device_pass

    # moves the program's constants too (a wrapped mean and std), which .to(device) leaves behind
    return move_to_device_pass(program, torch.device(device)).module()


def _from_onnx(path: Path):
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("an ONNX teacher needs onnxruntime: pip install onnxruntime") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = torch.get_num_threads()  # the worker's share, not every core
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

    run.input_shape, run.input_type = sess.get_inputs()[0].shape, sess.get_inputs()[0].type
    run.params = _onnx_params(path)
    return run


def _onnx_params(path: Path) -> int:
    """The number of weights in an ONNX graph (its float initializers); 0 without the onnx package."""
    try:
        import onnx
    except ImportError:
        return 0
    graph = onnx.load(str(path), load_external_data=False).graph
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in graph.initializer if t.data_type in floats))


def check(model: ExternalModel, entry: ExternalTeacher, images: torch.Tensor, classes: int) -> None:
    """One-line errors for a teacher that cannot label these images: a different input size (read
    from the ONNX graph where it says), or another number of classes than the data has."""
    size = images.shape[1]
    wanted = getattr(model.run, "input_type", None)  # an ONNX graph states its input's type
    if wanted and (wanted == "tensor(uint8)") != (entry.input == "uint8-nhwc"):
        other = "standardized-nchw" if entry.input == "uint8-nhwc" else "uint8-nhwc"
        raise UserError(f"external teacher {entry.name}: its entry says input = {entry.input!r} but the file "
                        f"takes {wanted}; set input = {other!r} in its entry")
    shape = getattr(model.run, "input_shape", None)
    if shape and len(shape) == 4:
        given = [size, size, 3] if entry.input == "uint8-nhwc" else [3, size, size]
        if any(isinstance(d, int) and d != g for d, g in zip(shape[1:], given, strict=True)):
            layout = "NHWC" if entry.input == "uint8-nhwc" else "NCHW"
            raise UserError(f"external teacher {entry.name}: takes input of shape {list(shape)}, but the data's "
                            f"images are {'x'.join(map(str, given))} ({layout}, as input = {entry.input!r} says)")
    try:
        out = model(images[:2] if model.takes == "uint8-nhwc" else to_float(images[:2]))
    except UserError:
        raise
    except Exception as e:  # the file's own runtime: torch.export raises AssertionError on a guard
        raise UserError(f"external teacher {entry.name}: cannot run on {size}x{size} images "
                        f"({str(e).splitlines()[0][:200]})") from None
    if out.ndim != 2 or out.shape[1] != classes:
        raise UserError(f"external teacher {entry.name}: gives {tuple(out.shape[1:])} outputs per image, "
                        f"the data has {classes} classes")
