"""The teacher ensemble: the K best teachers by validation accuracy, averaging their logits
(before softmax), as in the paper (PROTOCOL section 3).

Its members are fed what the transfer set renders before standardization, float NCHW images in
[0, 1], and each converts them to its own input: a network trained here standardizes them per
image (as in its training), an external teacher takes them as its entry states."""

from __future__ import annotations

from pathlib import Path

import torch

from shallowmimic.core.device import memory_format, precision, takes_compute
from shallowmimic.core.errors import UserError
from shallowmimic.core.files import provenance, read_json, write_json
from shallowmimic.core.layout import ENSEMBLE_JSON, RESULT_JSON
from shallowmimic.core.stats import encode_correct
from shallowmimic.data.split import SplitData, standardize, to_float
from shallowmimic.models.external import FAMILY as EXTERNAL
from shallowmimic.models.external import ExternalTeacher, load_external
from shallowmimic.models.layers import TTA, with_tta
from shallowmimic.models.result import ModelResult
from shallowmimic.models.store import load_model, read_model_json
from shallowmimic.training.batches import predict_logits
from shallowmimic.training.logits import stored_logits

MANIFEST = ENSEMBLE_JSON


def find_teachers(roots: list[Path]) -> list[dict]:
    """Every finished teacher (a directory with result.json of role teacher) under `roots`."""
    found = []
    for root in roots:
        for result in sorted(Path(root).rglob(RESULT_JSON)):
            record = read_json(result, "unfinished model")
            if isinstance(record, dict) and record.get("role") == "teacher":  # others are not ours to read
                found.append({**ModelResult.from_dict(record, str(result)).to_dict(), "dir": str(result.parent)})
    return found


def select_best(teachers: list[dict], k: int) -> list[dict]:
    if k < 1:
        raise UserError(f"ensemble size must be at least 1, got {k}")
    if len(teachers) < k:
        raise UserError(f"asked for the {k} best teachers but only {len(teachers)} finished teachers were found")
    # ties broken by directory name so the choice is reproducible
    return sorted(teachers, key=lambda t: (-t["val_acc"], t["dir"]))[:k]


class Ensemble(torch.nn.Module):
    """Averages its members' logits on float NCHW images in [0, 1] (`load_member` makes members
    of that input). Members are in eval mode; inference only."""

    def __init__(self, members: list[torch.nn.Module]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    @torch.no_grad()
    def forward(self, x):
        return torch.stack([m(x).float() for m in self.members]).mean(0)


class Standardized(torch.nn.Module):
    """A network trained here as an ensemble member: its input standardized per image first."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(standardize(x).contiguous(memory_format=memory_format(x.device)))


def is_external(directory: Path) -> bool:
    return read_model_json(directory).get("family") == EXTERNAL


def load_member(directory: Path, device, tta: str | None = None,
                external: dict[str, ExternalTeacher] | None = None) -> torch.nn.Module:
    """The teacher in DIRECTORY as a member (float NCHW in [0, 1] -> logits), in eval mode; `tta`
    replaces its test-time augmentation (None: its own; an external teacher has none of its own).
    `external`: entries by digest, where this process finds an external teacher's file (its
    model.json names where the last process to check it found it: another node may mount it
    elsewhere)."""
    meta = read_model_json(directory)
    if meta.get("family") == EXTERNAL:
        entry = (external or {}).get(meta["digest"]) or ExternalTeacher(**meta["entry"])
        member = load_external(entry, recorded=meta["digest"], device=device, takes="unit-nchw")
        return (TTA(member, tta) if tta and tta != "none" else member).eval()
    net = load_model(Path(directory), device)[0]
    return Standardized(with_tta(net, tta) if tta else net).eval()


def load_ensemble(manifest_dir: Path, device, tta: str | None = None,
                  external: tuple[ExternalTeacher, ...] = ()) -> Ensemble:
    """The ensemble of MANIFEST_DIR; `external`: the study's external teachers as this process
    finds them (see `load_member`)."""
    manifest = read_manifest(manifest_dir)
    places = {entry.digest(): entry for entry in external}
    return Ensemble([load_member(Path(m["dir"]), device, tta, places) for m in manifest["members"]]).eval()


def read_manifest(directory: Path) -> dict:
    return read_json(Path(directory) / MANIFEST, "not an ensemble directory")


def _logits(directory: Path, images: torch.Tensor, device, batch_size: int) -> torch.Tensor:
    """A teacher's float32 logits on uint8 NHWC images, as its job computed them."""
    if not is_external(directory):
        return predict_logits(load_model(directory, device)[0], images, batch_size)
    member = load_member(directory, device)
    return torch.cat([member(to_float(images[i : i + batch_size])).cpu() for i in range(0, len(images), batch_size)])


@takes_compute
def build_ensemble(teachers: list[dict], k: int, data: SplitData, out: Path, device, batch_size: int = 1000) -> dict:
    """Select, evaluate every member and the ensemble on validation and test, write the manifest."""
    for t in teachers:
        made_on = read_json(Path(t["dir"]) / "model.json", "not a model directory").get("split_fingerprint")
        if made_on and made_on != data.fingerprint:
            # its validation images would be training images here: selection would be biased
            raise UserError(f"{t['dir']}: this teacher was trained on another train/validation split "
                            f"(fingerprint {made_on}, this one {data.fingerprint})")
    members = select_best(teachers, k)
    val_logits, test_logits = [], []
    for m in members:
        d, parts = Path(m["dir"]), (data.x_val, data.x_test)
        # the teacher job stored these; a member is run again only where they do not match
        logits = [stored_logits(d, part, x, precision(device)) for part, x in zip(("val", "test"), parts, strict=True)]
        if any(lg is None for lg in logits):
            logits = [_logits(d, x, device, batch_size) if lg is None else lg
                      for lg, x in zip(logits, parts, strict=True)]
        val_logits.append(logits[0])
        test_logits.append(logits[1])
    y_val, y_test = data.y_val.cpu(), data.y_test.cpu()
    acc = lambda logits, y: (logits.argmax(1) == y).float().mean().item()  # noqa: E731
    correct = lambda logits: encode_correct((logits.argmax(1) == y_test).numpy())  # noqa: E731
    rows = [{"dir": m["dir"], "spec": m["spec"], "params": m["params"],
             "val_acc": acc(v, y_val), "test_acc": acc(t, y_test), "test_n": len(y_test),
             "test_correct": correct(t)}
            for m, v, t in zip(members, val_logits, test_logits, strict=True)]
    manifest = {
        "k": k,
        "members": rows,
        "params": sum(r["params"] for r in rows),
        "val_acc": acc(torch.stack(val_logits).mean(0), y_val),
        "test_acc": acc(torch.stack(test_logits).mean(0), y_test),
        "test_n": len(y_test), "test_correct": correct(torch.stack(test_logits).mean(0)),
        "best_member": max(rows, key=lambda r: r["val_acc"]),  # chosen on validation, as always
        "candidates": len(teachers),
        "split_fingerprint": data.fingerprint,
        "provenance": provenance(),
    }
    write_json(Path(out) / MANIFEST, manifest)
    return manifest
