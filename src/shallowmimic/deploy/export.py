"""Shipping a model: any teacher, student or the whole ensemble as one ONNX graph that takes raw
uint8 images (N, 32, 32, 3) and returns logits (N, 10), with the training's per-image
standardization inside the graph. Every export is checked by onnxruntime against PyTorch on
test images before it is renamed into place; the check is stored beside the file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from shallowmimic.core.errors import UserError
from shallowmimic.core.files import atomic_path, file_digest, provenance, read_json, write_json
from shallowmimic.data.split import standardize, to_float
from shallowmimic.distill.ensemble import MANIFEST as ENSEMBLE_MANIFEST
from shallowmimic.distill.ensemble import is_external, load_ensemble, read_manifest
from shallowmimic.models.checkpoint import BEST
from shallowmimic.models.result import ModelResult
from shallowmimic.models.store import MODEL_JSON, load_model
from shallowmimic.training.logits import weights_of

TOLERANCE = 1e-4  # largest absolute logit difference (fp32) accepted between onnxruntime and PyTorch
CHECK_IMAGES = 1000


class Deployable(torch.nn.Module):
    """uint8 NHWC images -> float32 logits: what training fed the network, then the network.
    `standardized=False`: a network that standardizes its input itself (an ensemble's members do)."""

    def __init__(self, net: torch.nn.Module, standardized: bool = True):
        super().__init__()
        self.net, self.standardized = net, standardized

    def forward(self, images):
        x = to_float(images)
        return self.net(standardize(x) if self.standardized else x).float()


def check_request(directory: Path, out: Path | None = None, check_only: bool = False) -> None:
    """Refuse an export that cannot work before anything is loaded (the dataset included):
    DIRECTORY must hold a model or an ensemble, `out` must not be a directory, and a check
    needs its file."""
    directory = Path(directory)
    if not (directory / ENSEMBLE_MANIFEST).exists() and not (directory / MODEL_JSON).exists():
        raise UserError(f"{directory}: neither a model directory ({MODEL_JSON}) nor an ensemble directory "
                        f"({ENSEMBLE_MANIFEST})")
    path = Path(out) if out else default_path(directory)
    if path.is_dir():
        raise UserError(f"--out {path}: is a directory; give the ONNX file to write, e.g. {path / 'model.onnx'}")
    if check_only and not path.exists():
        raise UserError(f"{path}: no such ONNX file; run `shallowmimic export {directory}` first")


def load_deployable(directory: Path) -> tuple[Deployable, dict]:
    """A model directory (model.json) or an ensemble directory (ensemble.json), in eval mode on
    the CPU, with what the report needs to know about it."""
    directory = Path(directory)
    if (directory / ENSEMBLE_MANIFEST).exists():
        m = read_manifest(directory)
        external = [Path(r["dir"]).name for r in m["members"] if is_external(Path(r["dir"]))]
        if external:
            raise UserError(f"an ensemble with external teachers ({', '.join(external)}) cannot be exported as one "
                            "graph: they run in their own runtimes")
        net = load_ensemble(directory, "cpu")
        meta = {"role": "ensemble", "family": f"ensemble of {m['k']}", "params": m["params"],
                "loss": "", "test_acc": m["test_acc"], "name": f"ensemble of {m['k']}"}
        return Deployable(net.float(), standardized=False).eval(), meta
    if (directory / MODEL_JSON).exists() and is_external(directory):
        raise UserError(f"{directory}: an external teacher, whose own file is its export")
    if (directory / MODEL_JSON).exists():
        net, spec = load_model(directory, "cpu")
        test_acc = ModelResult.load(directory).test_acc if ModelResult.exists(directory) else None
        meta = {"role": spec["role"], "family": spec["family"], "params": spec["params"],
                "loss": (spec.get("setting") or {}).get("loss", ""), "test_acc": test_acc,
                "name": directory.name}
    else:
        check_request(directory)  # raises: neither kind
    return Deployable(net.float()).eval(), meta


def default_path(directory: Path, ensemble: bool | None = None) -> Path:
    """Where a model's export lies; `ensemble`: whether DIRECTORY is an ensemble's (None: its
    manifest says, which a plan made before the ensemble exists cannot ask)."""
    directory = Path(directory)
    if ensemble is None:
        ensemble = (directory / ENSEMBLE_MANIFEST).exists()
    return directory / ("ensemble.onnx" if ensemble else "model.onnx")


def failure_path(onnx: Path) -> Path:
    """Where a failed check of an export is recorded: beside the file, `<file>.failed.json`."""
    return Path(onnx).with_name(Path(onnx).name + ".failed.json")


def check_path(onnx: Path) -> Path:
    """Where an export's check is stored: beside the file, `<file>.json`."""
    return Path(onnx).with_name(Path(onnx).name + ".json")


def weights_digest(directory: Path) -> str:
    """What an export of DIRECTORY was made from: its best weights, or for an ensemble its
    manifest and every member's weights."""
    directory = Path(directory)
    if (directory / ENSEMBLE_MANIFEST).exists():
        members = [Path(m["dir"]) for m in read_manifest(directory)["members"]]
        parts = [file_digest(directory / ENSEMBLE_MANIFEST), *(_made_of(d) for d in members)]
        return hashlib.sha256(" ".join(parts).encode()).hexdigest()
    return _made_of(directory)


def _made_of(directory: Path) -> str:
    """The digest of a model's best weights (an external teacher's: of its files)."""
    made_by = weights_of(directory, "fp32")
    if made_by is None:
        raise UserError(f"{directory}: has no trained weights ({BEST} missing)")
    return made_by[0]


def stored_check(directory: Path) -> dict | None:
    """The check written with DIRECTORY's export at its default path, if the file and its check
    are both there (the check is written only after the file is renamed into place) and were made
    from the directory's present weights at this opset; None otherwise."""
    path = default_path(directory)
    if not (path.exists() and check_path(path).exists()):
        return None
    check = read_json(check_path(path), "no export check")
    try:
        same = check.get("weights") == weights_digest(directory) and check.get("opset") == OPSET
    except (OSError, UserError, KeyError, TypeError):  # weights or manifest gone or unreadable
        return None
    return check if same else None


def export_onnx(directory: Path, images: np.ndarray, labels: np.ndarray, out: Path | None = None,
                loaded: tuple[Deployable, dict] | None = None) -> dict:
    """Write DIRECTORY's model as ONNX (dynamic batch axis) and its check (`<file>.json`); a
    failed check leaves no file behind. `images`/`labels`: test images (uint8 NHWC) to check on;
    `loaded`: the directory's `load_deployable`, when the caller has it already."""
    check_request(directory, out)
    model, meta = loaded or load_deployable(directory)
    out = Path(out) if out else default_path(directory)
    sample = torch.from_numpy(np.ascontiguousarray(images[:2]))
    with atomic_path(out) as tmp:
        _export(model, sample, tmp)
        check = check_onnx(tmp, model, images, labels, name=out)
    write_json(check_path(out), {**check, **meta, "source": str(Path(directory).resolve()),
                                 "weights": weights_digest(directory), "provenance": provenance()})
    return {**check, **meta, "path": str(out)}


def _export(model: Deployable, sample: torch.Tensor, path: Path) -> None:
    import warnings

    try:
        import onnx  # noqa: F401  (the exporter needs it; say so plainly)
    except ImportError:
        raise UserError("exporting needs the onnx and onnxruntime packages: pip install onnx onnxruntime") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter: these plain CNNs need nothing newer, and it takes a second
        # where the torch.export-based one takes several per model.
        torch.onnx.export(model, (sample,), str(path), input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)


OPSET = 20  # torch's default opset, the newest its TorchScript exporter writes


def session(path: Path, threads: int = 0):
    """An onnxruntime CPU session; an unreadable or invalid graph is a one-line error."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("checking an export needs onnxruntime: pip install onnxruntime") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for a broken file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{path}: not a valid ONNX model ({first[:200]})") from None


def check_onnx(path: Path, model: torch.nn.Module, images: np.ndarray, labels: np.ndarray,
               name: Path | None = None, n: int = CHECK_IMAGES) -> dict:
    """Run the graph in onnxruntime and the model in PyTorch (fp32) on the first `n` images:
    largest absolute logit difference and both accuracies. Raises on a mismatch."""
    name = name or path
    sess = session(path, threads=torch.get_num_threads())  # the process's share of the cores (workers)
    expected = sess.get_inputs()[0].shape[1:]
    if tuple(images.shape[1:]) != tuple(expected) or images.dtype != np.uint8:
        raise UserError(f"{name}: the graph takes uint8 images of shape {'x'.join(map(str, expected))}, "
                        f"got {images.dtype} images of shape {'x'.join(map(str, images.shape[1:]))}")
    x, y = np.ascontiguousarray(images[:n]), np.asarray(labels[:n])
    with torch.no_grad():
        ref = torch.cat([model(torch.from_numpy(x[i : i + 250])) for i in range(0, len(x), 250)]).numpy()
    got = np.concatenate([sess.run(None, {"images": x[i : i + 250]})[0] for i in range(0, len(x), 250)])
    diff = float(np.abs(got - ref).max())
    check = {"images": len(x), "max_abs_logit_diff": diff, "tolerance": TOLERANCE,
             "torch_acc": float((ref.argmax(1) == y).mean()), "onnx_acc": float((got.argmax(1) == y).mean()),
             "opset": OPSET}
    if not diff <= TOLERANCE:  # also catches NaN
        raise UserError(f"{name}: onnxruntime's logits differ from PyTorch's by {diff:.3g} (more than "
                        f"{TOLERANCE:g}) on {len(x)} test images")
    return check



def check_existing(directory: Path, images: np.ndarray, labels: np.ndarray, path: Path | None = None) -> dict:
    """Check an ONNX file written earlier against DIRECTORY's model (e.g. after copying it)."""
    check_request(directory, path, check_only=True)
    path = Path(path) if path else default_path(directory)
    model, meta = load_deployable(directory)
    return {**check_onnx(path, model, images, labels), **meta, "path": str(path)}
