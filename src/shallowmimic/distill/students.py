"""Training one student on the transfer set: a family at a budget, with the mimic (L2 on the
ensemble's logits), hard-label or distillation loss. No dropout, no weight decay."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from shallowmimic.core.device import takes_compute
from shallowmimic.core.errors import UserError
from shallowmimic.core.files import provenance
from shallowmimic.data.sources import Dataset
from shallowmimic.data.split import SplitConfig, SplitData, split_tensors
from shallowmimic.distill.transfer import TransferBatches
from shallowmimic.models.budget import format_budget
from shallowmimic.models.flops import train_flops_per_image
from shallowmimic.models.notation import BuildOptions
from shallowmimic.models.result import ModelResult
from shallowmimic.models.solve import solve_student
from shallowmimic.models.store import ModelSpec, load_model, save_model_spec
from shallowmimic.models.students import default_free, get_student
from shallowmimic.training.batches import test_record
from shallowmimic.training.loop import TrainConfig, fit


@dataclass(frozen=True)
class StudentSetting:
    family: str
    budget: int
    loss: str = "mimic"
    free: tuple = ()  # empty: the middle of the paper's ranges
    init_scale: float = 1.0
    input_scale: float = 1.0

    def solved(self, size: int, classes: int):
        fam = get_student(self.family)
        return solve_student(fam, self.budget, self.free or default_free(fam, self.budget), 3, size, classes)

    def model_spec(self, size: int, classes: int) -> ModelSpec:
        return ModelSpec("student", self.family, self.solved(size, classes).spec,
                         BuildOptions(init_scale=self.init_scale, input_scale=self.input_scale), 3, size, classes)

    @classmethod
    def from_params(cls, params: dict) -> StudentSetting:
        """The student a fixed-setting job of the study trains, from its job parameters."""
        return cls(params["family"], params["budget"], params["loss"], tuple(params.get("free", ())),
                   params["init_scale"], params["input_scale"])

    def train_flops(self, size: int, classes: int) -> float:
        """FLOPs of one training step per image: what orders students largest first."""
        return train_flops_per_image(self.model_spec(size, classes).build(), 3, size)


@takes_compute
def train_student(ds: Dataset, transfer_dir: Path, setting: StudentSetting, cfg: TrainConfig, out: Path,
                  device: torch.device, split: SplitConfig = SplitConfig(), progress: bool = True,
                  data: SplitData | None = None, evaluate_test: bool = True) -> dict:
    if setting.loss != cfg.loss:
        cfg = replace(cfg, loss=setting.loss)
    if cfg.weight_decay:
        raise UserError("students are trained without weight decay (the paper found it hurts)")
    mspec = setting.model_spec(ds.image_size, ds.num_classes)
    data = data or split_tensors(ds, split, device)
    batches = TransferBatches(transfer_dir, data.x_train, data.y_train, cfg.batch_size,
                              split_fingerprint=data.fingerprint)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_model_spec(out, mspec, {"budget": setting.budget, "setting": asdict(setting),
                                 "transfer": str(Path(transfer_dir).resolve()), "split": asdict(split)})
    model = mspec.build(device, cfg.seed)
    result = fit(model, batches, data.x_val, data.y_val, cfg, out,
                 desc=f"{setting.family}@{format_budget(setting.budget)} {setting.loss}", progress=progress)
    test = test_record(model, data.x_test, data.y_test) if evaluate_test else {}
    summary = {
        "role": "student", "family": setting.family, "conv_layers": get_student(setting.family).conv_layers,
        "budget": setting.budget, "params": mspec.params, "spec": mspec.spec, "loss": setting.loss,
        "val_acc": result.best_val_acc, "test_acc": test.get("test_acc"),
        "best_epoch": result.best_epoch, "epochs": result.epochs, "stopped": result.stopped,
        "wall_s": round(result.wall_s, 1), "device": str(device), "seed": cfg.seed,
        "setting": asdict(setting), "config": asdict(cfg), "provenance": provenance(), **test,
    }
    ModelResult.from_dict(summary).save(out)
    return summary


def add_test_accuracy(directory: Path, data: SplitData) -> float:
    """Evaluate a finished student (e.g. a search trial) on the test set once, after selection."""
    result = ModelResult.load(directory)
    if result.test_acc is None:
        model, _ = load_model(directory, data.x_test.device)
        result = result.with_test(test_record(model, data.x_test, data.y_test))
        result.save(directory)
    return result.test_acc
