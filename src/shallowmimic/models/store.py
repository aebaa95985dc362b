"""A trained model on disk: `model.json` (how to rebuild it) next to `best.safetensors`."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from shallowmimic.core.config import from_dict
from shallowmimic.core.errors import UserError
from shallowmimic.core.files import read_json, write_json
from shallowmimic.models.checkpoint import BEST, CHECKPOINT, load_weights
from shallowmimic.models.layers import build
from shallowmimic.models.notation import BuildOptions, count_params, parse_spec

MODEL_JSON = "model.json"


@dataclass(frozen=True)
class ModelSpec:
    role: str  # teacher | student
    family: str  # teacher variant or student family
    spec: str  # the paper's notation
    options: BuildOptions
    channels: int
    size: int
    classes: int

    @property
    def params(self) -> int:
        return count_params(parse_spec(self.spec), self.channels, self.size, self.classes,
                            self.options.batchnorm)

    def build(self, device="cpu", seed: int = 0) -> torch.nn.Module:
        torch.manual_seed(seed)  # initialization depends on the seed only
        net = build(parse_spec(self.spec), self.channels, self.size, self.classes, self.options)
        return net.to(device)


def save_model_spec(directory: Path, spec: ModelSpec, extra: dict | None = None) -> None:
    """Write model.json. Beside a checkpoint it must describe the same model and data: a
    resumed run may not be relabelled (another spec, split or augmentation) under its weights."""
    path = Path(directory) / MODEL_JSON
    new = json.loads(json.dumps({**dataclasses.asdict(spec), "params": spec.params, **(extra or {})}))
    if (Path(directory) / CHECKPOINT).exists() and path.exists():
        old = read_json(path, "not a model directory")
        changed = sorted(k for k in set(old) | set(new) if k != "provenance" and old.get(k) != new.get(k))
        if changed:
            raise UserError(f"{directory}: holds a run of another model or data (differs in {', '.join(changed)}); "
                            "choose another output directory")
    write_json(path, new)


def read_model_json(directory: Path) -> dict:
    return read_json(Path(directory) / MODEL_JSON, "not a model directory")


def load_model(directory: Path, device="cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild a saved model with its best-by-validation weights."""
    directory = Path(directory)
    meta = read_model_json(directory)
    fields = {f.name for f in dataclasses.fields(ModelSpec)}
    spec = from_dict(ModelSpec, {k: v for k, v in meta.items() if k in fields}, str(directory / MODEL_JSON))
    model = spec.build(device)
    if not (Path(directory) / BEST).exists():
        raise UserError(f"{directory}: has no trained weights yet ({BEST} missing)")
    load_weights(Path(directory) / BEST, model, device)
    model.eval()
    return model, meta
