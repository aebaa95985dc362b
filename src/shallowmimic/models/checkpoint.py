"""Checkpoints: tensors in safetensors (no pickle), state as JSON, every file atomic.

`checkpoint.safetensors` holds the model (`model.*`, buffers included) and the optimizer's
per-parameter state (`optim.<index>.<name>`), with the full training state as JSON in its
metadata, so one rename commits everything. `checkpoint.json` is a readable copy of that state.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from shallowmimic.core.errors import UserError
from shallowmimic.core.files import atomic_path, write_json

CHECKPOINT = "checkpoint.safetensors"
SIDECAR = "checkpoint.json"
BEST = "best.safetensors"
BEST_PENDING = "best-pending.safetensors"  # new best weights until the checkpoint commits them


def _contiguous(sd: dict) -> dict:
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}


def save_weights(path: Path, model: nn.Module, metadata: dict | None = None) -> None:
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    with atomic_path(path) as tmp:
        save_file(_contiguous(model.state_dict()), str(tmp), metadata=meta)


def load_weights(path: Path, model: nn.Module, device="cpu") -> dict:
    """Load weights into `model`; return the metadata saved with them."""
    try:
        tensors = load_file(str(path), device=str(device))
        with safe_open(str(path), framework="pt") as f:
            meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise UserError(f"{path}: cannot read checkpoint ({e})") from None
    tensors = {k.removeprefix("model."): v for k, v in tensors.items() if not k.startswith("optim.")}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise UserError(f"{path}: weights do not fit this architecture (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]})")
    return meta


def save_checkpoint(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict,
                    extra: dict[str, torch.Tensor] | None = None) -> None:
    """`extra`: more tensors of the training state (e.g. lookahead weights), saved as `extra.*`."""
    tensors = {f"model.{k}": v for k, v in _contiguous(model.state_dict()).items()}
    tensors.update({f"extra.{k}": v for k, v in _contiguous(extra or {}).items()})
    opt = optimizer.state_dict()
    for idx, pstate in opt["state"].items():
        for name, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = value.detach().contiguous().cpu()
    state = {**state, "optimizer": {"param_groups": opt["param_groups"], "tensors": CHECKPOINT}}
    with atomic_path(directory / CHECKPOINT) as tmp:
        save_file(tensors, str(tmp), metadata={"state": json.dumps(state)})
    write_json(directory / SIDECAR, state)


def read_checkpoint_state(directory: Path) -> dict:
    """The training state a checkpoint commits (its JSON metadata), without loading tensors."""
    path = directory / CHECKPOINT
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads(f.metadata()["state"])
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
        raise UserError(f"{path}: cannot resume from this checkpoint ({e})") from None


def load_checkpoint(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, device,
                    extra: dict[str, torch.Tensor] | None = None) -> dict:
    """Restore model and optimizer; fill the tensors of `extra` in place from `extra.*`."""
    path = directory / CHECKPOINT
    try:
        tensors = load_file(str(path), device=str(device))
        with safe_open(str(path), framework="pt") as f:
            state = json.loads(f.metadata()["state"])
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as e:
        raise UserError(f"{path}: cannot resume from this checkpoint ({e})") from None
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    for k, v in (extra or {}).items():
        if f"extra.{k}" not in tensors:
            raise UserError(f"{path}: cannot resume: the checkpoint lacks extra.{k}")
        v.copy_(tensors[f"extra.{k}"])
    opt_state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            opt_state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["optimizer"]["param_groups"]})
    return state
