"""An external teacher as one of a study's teachers: checked against the data, evaluated on the
split's validation and test images, and recorded like a trained teacher (model.json with its
entry and digest, its stored logits, result.json), so that the ensemble's selection by
validation treats it like any other."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from shallowmimic.core.errors import UserError
from shallowmimic.core.files import provenance, read_json, write_json
from shallowmimic.data.split import SplitConfig, SplitData
from shallowmimic.models.external import FAMILY, ExternalTeacher, check, load_external
from shallowmimic.models.result import ModelResult
from shallowmimic.models.store import MODEL_JSON
from shallowmimic.training.batches import logits_record
from shallowmimic.training.logits import store_logits


def recorded_digest(directory: Path) -> str | None:
    """The digest an external teacher's job recorded for its file(s), if it ran."""
    path = Path(directory) / MODEL_JSON
    return read_json(path, "not a model directory").get("digest") if path.exists() else None


def verify_external(entry: ExternalTeacher, directory: Path) -> None:
    """A finished external teacher's file(s) must be the ones it was evaluated with; where they
    moved (same digest, another path), its record follows them."""
    recorded = recorded_digest(directory)
    digest = entry.digest()
    if recorded and digest != recorded:
        raise UserError(f"external teacher {entry.name}: its file changed since this study recorded its digest "
                        f"({recorded[:12]} then, {digest[:12]} now); restore it, or start a new study (--out)")
    meta = read_json(Path(directory) / MODEL_JSON, "not a model directory")
    if recorded and meta.get("entry") != asdict(entry.resolved()):
        write_json(Path(directory) / MODEL_JSON, {**meta, "entry": asdict(entry.resolved())})


def evaluate_external(entry: ExternalTeacher, data: SplitData, out: Path, classes: int, device: torch.device,
                      split: SplitConfig = SplitConfig(), source: str = "", batch_size: int = 1000) -> ModelResult:
    """Check `entry` against the data, then write its record, logits and result into `out`."""
    t0 = time.perf_counter()
    digest = entry.digest()
    model = load_external(entry, recorded=recorded_digest(out), device=device)
    check(model, entry, data.x_val, classes)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / MODEL_JSON, {"role": "teacher", "family": FAMILY, "spec": Path(entry.name).name,
                                  "entry": asdict(entry.resolved()), "digest": digest, "params": model.params,
                                  "size": data.x_val.shape[1], "classes": classes, "data": source,
                                  "split": asdict(split), "split_fingerprint": data.fingerprint})
    parts = {"val": data.x_val, "test": data.x_test}
    logits = {name: _predict(model, images, batch_size) for name, images in parts.items()}
    store_logits(out, {name: (parts[name], lg) for name, lg in logits.items()}, "fp32")
    test = logits_record(logits["test"], data.y_test)
    val_acc = float((logits["val"].argmax(1) == data.y_val.cpu()).numpy().mean())  # as a trained teacher's
    result = ModelResult(role="teacher", family=FAMILY, spec=Path(entry.name).name, params=model.params,
                         val_acc=val_acc, test_acc=test["test_acc"], epochs=0,
                         wall_s=round(time.perf_counter() - t0, 1), device=str(device),
                         details={"digest": digest, "input": entry.input, "entry": asdict(entry.resolved()),
                                  "test_n": test["test_n"], "test_correct": test["test_correct"],
                                  "provenance": provenance()})
    result.save(out)
    return result


def _predict(model, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Float32 logits on the CPU for uint8 NHWC images, batch by batch."""
    return torch.cat([model(images[i : i + batch_size]).float().cpu() for i in range(0, len(images), batch_size)])
