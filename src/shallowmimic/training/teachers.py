"""Training and evaluating one teacher on the data layer's split, with online augmentation."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import torch

from shallowmimic.augment.transforms import TEACHER_HSV, HSVConstants
from shallowmimic.core.device import precision, takes_compute
from shallowmimic.core.files import provenance
from shallowmimic.data.sources import Dataset
from shallowmimic.data.split import SplitConfig, SplitData, split_tensors
from shallowmimic.models.layers import init_whitening
from shallowmimic.models.notation import parse_spec
from shallowmimic.models.result import ModelResult
from shallowmimic.models.store import ModelSpec, load_model, save_model_spec
from shallowmimic.models.teachers import get_teacher
from shallowmimic.training.batches import AugmentedBatches, evaluate, logits_record, predict_logits, prepare
from shallowmimic.training.logits import store_logits
from shallowmimic.training.loop import TrainConfig, fit

WHITEN_IMAGES = 5000  # training images whose 2x2 patches set the whitening stem


def teacher_config(variant: str, **overrides) -> TrainConfig:
    """The variant's training defaults, with any overrides."""
    v = get_teacher(variant)
    base = TrainConfig(loss="hard", **asdict(v.recipe))
    return replace(base, **{k: val for k, val in overrides.items() if val is not None})


@takes_compute
def train_teacher(ds: Dataset, out: Path, variant: str, spec: str | None, cfg: TrainConfig,
                  device: torch.device, split: SplitConfig = SplitConfig(),
                  hsv: HSVConstants = TEACHER_HSV, resume: bool = True, progress: bool = True,
                  options_override: dict | None = None, evaluate_test: bool = True,
                  data: SplitData | None = None) -> dict:
    """Train one teacher into `out` (resuming a checkpoint there). `evaluate_test=False` keeps
    the test set out of sight (hyperparameter search trials)."""
    v = get_teacher(variant)
    spec = str(parse_spec(spec or v.default_spec))
    options = replace(v.options, **(options_override or {}))
    mspec = ModelSpec("teacher", variant, spec, options, 3, ds.image_size, ds.num_classes)
    data = data or split_tensors(ds, split, device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_model_spec(out, mspec, {"data": ds.source, "split": asdict(split),
                                 "split_fingerprint": data.fingerprint, "hsv": asdict(hsv)})
    model = mspec.build(device, cfg.seed)
    init_whitening(model, prepare(data.x_train[:WHITEN_IMAGES], device))  # a no-op without a stem
    batches = AugmentedBatches(data.x_train, data.y_train, None if v.translate else hsv, cfg.batch_size,
                               cfg.seed, translate=v.translate, alternate=v.alternating_flip)
    result = fit(model, batches, data.x_val, data.y_val, cfg, out, resume=resume,
                 desc=f"teacher {spec}", progress=progress)
    # Logits on validation (and test, unless kept out of sight) stored for the ensemble stage
    parts = {"val": data.x_val, **({"test": data.x_test} if evaluate_test else {})}
    logits = {name: predict_logits(model, images, cfg.eval_batch_size) for name, images in parts.items()}
    store_logits(out, {name: (parts[name], lg) for name, lg in logits.items()}, precision(device))
    test = logits_record(logits["test"], data.y_test) if evaluate_test else {}
    summary = {"role": "teacher", "family": variant, "spec": spec, "params": mspec.params,
               "val_acc": result.best_val_acc, "test_acc": test.get("test_acc"), "best_epoch": result.best_epoch,
               "epochs": result.epochs, "stopped": result.stopped, "wall_s": round(result.wall_s, 1),
               "images_per_s": round(result.images_per_s, 1), "device": str(device),
               "config": asdict(cfg), "provenance": provenance(), **test}
    ModelResult.from_dict(summary).save(out)
    return summary


def eval_model(ds: Dataset, directory: Path, device: torch.device, split: SplitConfig | None = None) -> dict:
    """Validation and test accuracy of a saved model, on the split it was trained with."""
    model, meta = load_model(directory, device)
    split = split or SplitConfig(**meta.get("split", {}))
    data = split_tensors(ds, replace(split, train_limit=0), device)
    return {"spec": meta["spec"], "params": meta["params"],
            "val_acc": evaluate(model, data.x_val, data.y_val),
            "test_acc": evaluate(model, data.x_test, data.y_test)}
