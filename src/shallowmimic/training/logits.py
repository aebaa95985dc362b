"""A teacher's logits on the validation and test images, stored beside its weights
(`logits.safetensors`) by the job that trained it, so that the ensemble is chosen and scored
without running its members again (with several workers that pass ran on one worker while
the others waited).

Each stored part names the images it was computed on and the weights that computed it (their
digests: `best.safetensors`, or an external teacher's files); a part that does not match both is
ignored and computed afresh, so a stale or foreign file can cost time but never change a number.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from shallowmimic.core.errors import UserError
from shallowmimic.core.files import atomic_path, file_digest
from shallowmimic.models.checkpoint import BEST
from shallowmimic.models.external import FAMILY as EXTERNAL
from shallowmimic.models.store import MODEL_JSON

LOGITS = "logits.safetensors"


def images_digest(images: torch.Tensor) -> str:
    """sha256 of the images' shape and bytes (uint8 NHWC)."""
    a = images.detach().cpu().contiguous()
    h = hashlib.sha256(str(tuple(a.shape)).encode())
    h.update(a.numpy().tobytes())
    return h.hexdigest()


def weights_of(directory: Path, precision: str) -> tuple[str, str] | None:
    """(digest of what computes the logits, precision they are computed at) of the model in
    DIRECTORY: its best weights at `precision`, or the digest an external teacher's files had
    when its job ran them (always in fp32; whatever loads the teacher checks its files); None
    when there is nothing to compute them (an untrained or missing model)."""
    directory = Path(directory)
    if (directory / BEST).exists():
        return file_digest(directory / BEST), precision
    try:
        meta = json.loads((directory / MODEL_JSON).read_text())
        if meta.get("family") == EXTERNAL:  # the digest it was run with; loading it checks the file
            return str(meta["digest"]), "fp32"
    except (OSError, ValueError, TypeError, KeyError):
        pass  # unreadable: nothing stored can be vouched for
    return None


def store_logits(directory: Path, parts: dict[str, tuple[torch.Tensor, torch.Tensor]], precision: str) -> None:
    """Write `{part: (images, logits)}` for the model now in DIRECTORY (its best.safetensors, or
    its external teacher's files), computed at `precision` (fp32 or bf16 autocast)."""
    directory = Path(directory)
    keys = {name: {"images": images_digest(images), "rows": len(logits)} for name, (images, logits) in parts.items()}
    made_by = weights_of(directory, precision)
    if made_by is None:
        raise UserError(f"{directory}: no weights to store logits of ({BEST} or an external teacher's model.json)")
    weights, precision = made_by
    meta = {"weights": weights, "precision": precision, "parts": json.dumps(keys)}
    with atomic_path(directory / LOGITS) as tmp:
        save_file({name: logits.float().cpu().contiguous() for name, (_, logits) in parts.items()}, str(tmp), meta)


def stored_logits(directory: Path, part: str, images: torch.Tensor, precision: str) -> torch.Tensor | None:
    """The stored logits of `part` if they were computed on exactly these images by the
    directory's current weights at this precision; None otherwise (no file, another split,
    retrained weights, another precision)."""
    path = Path(directory) / LOGITS
    made_by = weights_of(directory, precision)
    if not path.exists() or made_by is None:
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = json.loads(meta.get("parts", "{}"))
            if part not in keys or (meta.get("weights"), meta.get("precision")) != made_by:
                return None
            if keys[part].get("images") != images_digest(images):
                return None
            logits = f.get_tensor(part)
    except (SafetensorError, OSError, ValueError, TypeError, AttributeError):
        return None  # unreadable: recomputed, like a missing file
    return logits if logits.shape[0] == len(images) else None

