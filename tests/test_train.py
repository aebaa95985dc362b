import json
import os

import pytest
import torch
from click.testing import CliRunner

from shallowmimic.augment.transforms import STUDENT_HSV
from shallowmimic.cli import main
from shallowmimic.core.errors import UserError
from shallowmimic.models.checkpoint import BEST, CHECKPOINT
from shallowmimic.models.layers import build
from shallowmimic.models.notation import BuildOptions, parse_spec
from shallowmimic.training.batches import AugmentedBatches
from shallowmimic.training.loop import Diverged, TrainConfig, fit
from shallowmimic.training.losses import DistillationLoss, HardLabelLoss, MimicLoss


def tiny_data(n=96, size=8, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randint(0, 120, (n, size, size, 3), dtype=torch.uint8, generator=g)
    x[..., 0] += (y * 60).to(torch.uint8).view(-1, 1, 1)  # learnable: the red channel tells the class
    return x, y


def new_model(bn=True, dropout=0.2):
    torch.manual_seed(0)
    return build(parse_spec("4c-mp-16fc"), 3, 8, 3, BuildOptions(batchnorm=bn, pool_dropout=(dropout,)))


class Crash(Exception):
    pass


class CrashingBatches:
    """Wraps batches and dies in the middle of epoch `at` (like a killed process)."""

    def __init__(self, inner, at):
        self.inner, self.at = inner, at

    def __len__(self):
        return len(self.inner)

    def epoch(self, e):
        for i, b in enumerate(self.inner.epoch(e)):
            if e == self.at and i == 2:
                raise Crash
            yield b


@pytest.mark.parametrize("schedule", ["linear", "plateau"])
def test_resume_gives_exactly_the_uninterrupted_weights(tmp_path, schedule):
    x, y = tiny_data()
    cfg = TrainConfig(epochs=5, batch_size=16, lr=0.05, schedule=schedule, weight_decay=1e-4, seed=3)
    batches = AugmentedBatches(x, y, STUDENT_HSV, 16, seed=3)

    straight = new_model()
    r1 = fit(straight, batches, x[:32], y[:32], cfg, tmp_path / "a", progress=False)

    interrupted = new_model()
    with pytest.raises(Crash):
        fit(interrupted, CrashingBatches(batches, at=3), x[:32], y[:32], cfg, tmp_path / "b", progress=False)
    assert json.loads((tmp_path / "b" / "checkpoint.json").read_text())["epoch"] == 3
    resumed = new_model()  # a fresh process: nothing but the files on disk
    r2 = fit(resumed, batches, x[:32], y[:32], cfg, tmp_path / "b", progress=False)

    strip = lambda hs: [{k: v for k, v in h.items() if k not in ("train_s", "images_per_s")} for h in hs]  # noqa
    assert strip(r1.history) == strip(r2.history)
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2, 3, 4, 5]


def test_finished_run_returns_without_training(tmp_path):
    x, y = tiny_data()
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.05, schedule="linear")
    batches = AugmentedBatches(x, y, None, 16, seed=0)
    fit(new_model(), batches, x, y, cfg, tmp_path, progress=False)
    stamp = (tmp_path / CHECKPOINT).stat().st_mtime_ns
    r = fit(new_model(), CrashingBatches(batches, at=0), x, y, cfg, tmp_path, progress=False)
    assert r.epochs == 2 and (tmp_path / CHECKPOINT).stat().st_mtime_ns == stamp


def test_existing_run_without_resume_is_refused(tmp_path):
    x, y = tiny_data()
    cfg = TrainConfig(epochs=1, batch_size=16, schedule="linear")
    fit(new_model(), AugmentedBatches(x, y, None, 16, 0), x, y, cfg, tmp_path, progress=False)
    with pytest.raises(UserError, match="pass --resume"):
        fit(new_model(), AugmentedBatches(x, y, None, 16, 0), x, y, cfg, tmp_path, resume=False, progress=False)


def test_learns_and_keeps_the_best_weights(tmp_path):
    x, y = tiny_data(n=192)
    cfg = TrainConfig(epochs=6, batch_size=16, lr=0.05, schedule="linear")
    model = new_model(dropout=0.0)
    r = fit(model, AugmentedBatches(x, y, None, 16, 0), x[:64], y[:64], cfg, tmp_path, progress=False)
    assert r.best_val_acc > 0.6
    assert r.best_val_acc == max(h["val_acc"] for h in r.history)
    assert (tmp_path / BEST).exists()


def test_compiled_training_matches_eager_training(tmp_path):
    """`--compile` trains through torch.compile (Inductor); the weights follow the eager run's."""
    from torch._dynamo.utils import counters

    from shallowmimic.core.device import set_compile

    x, y = tiny_data(n=64)
    cfg = TrainConfig(epochs=1, batch_size=16, lr=0.05, schedule="linear")
    models = []
    for on in (False, True):
        set_compile(on)
        try:
            counters.clear()
            model = new_model(bn=False, dropout=0.0)
            fit(model, AugmentedBatches(x, y, None, 16, 0), x[:32], y[:32], cfg, tmp_path / str(on), progress=False)
            assert bool(counters["stats"]["unique_graphs"]) == on
        finally:
            set_compile(False)
        models.append(model)
    for (k, a), (_, b) in zip(models[0].state_dict().items(), models[1].state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-2), k


def test_divergence_is_reported(tmp_path):
    x, y = tiny_data()
    cfg = TrainConfig(epochs=3, batch_size=16, lr=1e6, schedule="plateau", max_loss=1e3)
    with pytest.raises(Diverged, match="diverged"):
        fit(new_model(bn=False), AugmentedBatches(x, y, None, 16, 0), x, y, cfg, tmp_path, progress=False)


def test_losses_match_their_formulas():
    g = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    z = torch.tensor([[0.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
    y = torch.tensor([1, 2])
    assert torch.isclose(MimicLoss()(g, y, z), torch.tensor((1 + 0 + 1 + 1 + 1 + 4) / 2))
    ce = -torch.log_softmax(g, 1)[[0, 1], y].mean()
    assert torch.isclose(HardLabelLoss()(g, y), ce)
    assert torch.isclose(DistillationLoss(alpha=0.0)(g, y, z), ce)
    assert DistillationLoss(alpha=1.0)(z, y, z).abs() < 1e-6  # matching the teacher costs nothing
    smooth = HardLabelLoss(label_smoothing=0.3)(g, y)
    assert smooth > ce


def test_train_config_validation():
    with pytest.raises(UserError, match="train.lr must be positive"):
        TrainConfig(lr=0)


def test_teacher_cli_train_eval_and_resume(tmp_path):
    import numpy as np

    from .conftest import tiny_arrays

    np.savez(tmp_path / "d.npz", **tiny_arrays(n_train=120, n_test=30, size=16, classes=3))
    out = tmp_path / "t"
    args = ["teacher", "train", "--data", tmp_path / "d.npz", "--arch", "8c-mp-8c-mp-16fc", "--epochs", "2",
            "--batch-size", "16", "--out", out, "--no-progress", "--device", "cpu"]
    args = [str(a) for a in args]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "validation size 10000 must be between 1 and 119" in r.output
    r = CliRunner().invoke(main, args + ["--val-size", "40"])
    assert r.exit_code == 0, r.output
    assert "teacher 8c-mp-8c-mp-16fc" in r.output and "test" in r.output
    r = CliRunner().invoke(main, args + ["--val-size", "40"])
    assert r.exit_code == 1 and "pass --resume" in r.output
    r = CliRunner().invoke(main, args + ["--val-size", "40", "--resume"])
    assert r.exit_code == 0, r.output
    model_json = json.loads((out / "model.json").read_text())
    assert model_json["spec"] == "8c-mp-8c-mp-16fc" and model_json["options"]["batchnorm"] is True
    r = CliRunner().invoke(main, ["teacher", "eval", "--data", str(tmp_path / "d.npz"), str(out)])
    assert r.exit_code == 0 and "test" in r.output


@pytest.mark.parametrize("change", [{"lr": 0.1}, {"epochs": 4}, {"loss": "kd"}])
@pytest.mark.parametrize("finished", [False, True])
def test_resume_under_changed_settings_is_refused(tmp_path, change, finished):
    """Issue 9 item 3: a checkpoint continues only under the config it recorded."""
    x, y = tiny_data()
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.05, schedule="linear")
    batches = AugmentedBatches(x, y, None, 16, 0)
    if finished:
        fit(new_model(), batches, x, y, cfg, tmp_path, progress=False)
    else:
        with pytest.raises(Crash):
            fit(new_model(), CrashingBatches(batches, at=1), x, y, cfg, tmp_path, progress=False)
    recorded = (tmp_path / "checkpoint.json").read_text()
    with pytest.raises(UserError, match=f"other settings \\({next(iter(change))} "):
        fit(new_model(), batches, x, y, TrainConfig(**{**cfg.__dict__, **change}), tmp_path, progress=False)
    assert (tmp_path / "checkpoint.json").read_text() == recorded  # the record is untouched
    fit(new_model(), batches, x, y, TrainConfig(**{**cfg.__dict__, "eval_batch_size": 7}), tmp_path,
        progress=False)  # what does not change the training may differ


def test_best_weights_and_their_score_survive_a_crash_between_them(tmp_path, monkeypatch):
    """Issue 9 item 4: new best weights are committed by the checkpoint that records their score."""
    from safetensors import safe_open

    import shallowmimic.training.loop as train

    x, y = tiny_data(n=192)
    cfg = TrainConfig(epochs=4, batch_size=16, lr=0.05, schedule="linear")
    batches = AugmentedBatches(x, y, None, 16, 0)
    real, calls = train.save_checkpoint, []

    def dies_after_a_later_best(*a, **k):
        calls.append(1)
        if len(calls) >= 2 and (tmp_path / "best-pending.safetensors").exists():
            raise Crash  # new best weights written, the checkpoint recording them not yet
        real(*a, **k)

    monkeypatch.setattr(train, "save_checkpoint", dies_after_a_later_best)
    with pytest.raises(Crash):
        fit(new_model(dropout=0.0), batches, x[:64], y[:64], cfg, tmp_path, progress=False)
    monkeypatch.setattr(train, "save_checkpoint", real)
    assert (tmp_path / "best-pending.safetensors").exists() and (tmp_path / BEST).exists()

    def best_epoch():
        with safe_open(str(tmp_path / BEST), framework="pt") as f:
            return json.loads(f.metadata()["epoch"])

    state = json.loads((tmp_path / "checkpoint.json").read_text())
    assert best_epoch() == state["best_epoch"] < len(calls)  # the committed best, not the crashed one
    r = fit(new_model(dropout=0.0), batches, x[:64], y[:64], cfg, tmp_path, progress=False)
    assert best_epoch() == r.best_epoch and not (tmp_path / "best-pending.safetensors").exists()


def test_a_resumed_run_cannot_be_relabelled(tmp_path):
    """Issue 9 item 3: model.json beside a checkpoint must keep describing the same model and data."""
    from shallowmimic.models.store import ModelSpec, save_model_spec

    spec = ModelSpec("teacher", "bn", "4c-mp-16fc", BuildOptions(batchnorm=True), 3, 8, 3)
    save_model_spec(tmp_path, spec, {"split_fingerprint": "a"})
    save_model_spec(tmp_path, spec, {"split_fingerprint": "b"})  # no checkpoint yet: nothing to protect
    (tmp_path / CHECKPOINT).write_bytes(b"")
    save_model_spec(tmp_path, spec, {"split_fingerprint": "b"})  # the same again is fine
    with pytest.raises(UserError, match="differs in split_fingerprint"):
        save_model_spec(tmp_path, spec, {"split_fingerprint": "c"})


def test_every_training_writes_its_curves_as_it_goes(tmp_path):
    """Issue 23 item 3: per-epoch loss, validation accuracy (where measured), learning rate,
    clipped share and images/s as CSV beside metrics.jsonl; TensorBoard events where installed."""
    import csv

    from shallowmimic.training.curves import COLUMNS, read_curves, tensorboard_installed, write_curves

    history = [{"epoch": 1, "train_loss": 2.0, "val_acc": None, "lr": 0.1, "clipped": None, "images_per_s": 9.5,
                "train_s": 1.0},
               {"epoch": 2, "train_loss": 1.5, "val_acc": 0.4, "lr": 0.05, "clipped": 0.25, "images_per_s": 10.0,
                "train_s": 0.9}]
    write_curves(tmp_path, history)
    rows = list(csv.DictReader(open(tmp_path / "curves.csv")))
    assert tuple(rows[0]) == COLUMNS and rows[0]["val_acc"] == "" and rows[1]["clipped"] == "0.25"
    assert read_curves(tmp_path) == history and read_curves(tmp_path / "elsewhere") == []
    assert tensorboard_installed() or not os.environ.get("CI"), "CI installs the tensorboard extra"


def test_a_resumed_training_logs_each_epoch_once_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from shallowmimic.training.curves import TensorBoard

    first = TensorBoard(tmp_path, 0)
    for e in (1, 2, 3):  # epoch 3 was logged, but the run was killed before its checkpoint
        first.epoch({"epoch": e, "train_loss": 1.0 / e, "val_acc": None, "lr": 0.1})
    first.close()
    again = TensorBoard(tmp_path, 2)  # resumed from the checkpoint of epoch 2
    again.epoch({"epoch": 3, "train_loss": 0.3, "val_acc": 0.5, "lr": 0.1})
    again.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(s.step, round(s.value, 3)) for s in events.Scalars("train_loss")] == [(1, 1.0), (2, 0.5), (3, 0.3)]
    assert [s.step for s in events.Scalars("val_acc")] == [3]
