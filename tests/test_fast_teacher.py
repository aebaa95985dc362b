"""The fast teacher recipe's pieces: whitening stem, conv groups, TTA, lookahead (with exact
resume), bias learning rate, triangular schedule, light augmentation, clipping counts."""

import json
from pathlib import Path

import pytest
import torch

from shallowmimic.augment.transforms import alternating_flips, flip_translate
from shallowmimic.core.errors import UserError
from shallowmimic.models.layers import TTA, Whiten, build, init_whitening
from shallowmimic.models.notation import BuildOptions, count_params, parse_spec
from shallowmimic.training.batches import AugmentedBatches
from shallowmimic.training.loop import Lookahead, TrainConfig, fit, make_optimizer
from shallowmimic.training.schedule import triangle_lr

from .test_train import Crash, CrashingBatches, tiny_data

FAST = BuildOptions(batchnorm=True, activation="gelu", dirac_init=True, head_scale=1 / 9)


def fast_net(opts=FAST, size=8, classes=3):
    torch.manual_seed(0)
    return build(parse_spec("24w@2-8g-16g-gmp"), 3, size, classes, opts)


def test_new_tokens_round_trip_and_count():
    arch = parse_spec("24w@2-32g-64g-128g-gmp")
    assert str(parse_spec(str(arch))) == "24w@2-32g-64g-128g-gmp"
    net = build(arch, 3, 32, 10, FAST)
    assert count_params(arch, 3, 32, 10) == sum(p.numel() for p in net.parameters())
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("spec, message", [("12w@2-8g", "has 24 filters"), ("8g-24w@2", "must come first")])
def test_bad_stems_are_clear_errors(spec, message):
    with pytest.raises(UserError, match=message):
        count_params(parse_spec(spec), 3, 32, 10)


def test_whitening_decorrelates_patches():
    net = fast_net()
    x = torch.randn(64, 3, 8, 8) @ torch.randn(8, 8)  # correlated pixels
    assert init_whitening(net, x)
    stem = next(m for m in net.modules() if isinstance(m, Whiten))
    assert not stem.weight.requires_grad
    out = torch.nn.functional.conv2d(x, stem.weight[:12])  # the + half
    cov = torch.cov(out.permute(1, 0, 2, 3).reshape(12, -1))
    assert torch.allclose(cov, torch.eye(12), atol=0.05)
    assert not init_whitening(build(parse_spec("4c-mp-8fc"), 3, 8, 3), x)


def test_dirac_init_starts_as_identity():
    conv = next(m for m in fast_net().modules() if isinstance(m, torch.nn.Conv2d) and not isinstance(m, Whiten))
    x = torch.randn(1, conv.in_channels, 5, 5)
    out = torch.nn.functional.conv2d(x, conv.weight, padding=1)
    k = min(conv.in_channels, conv.out_channels)
    assert torch.allclose(out[:, :k], x[:, :k])


def test_flip_tta_is_flip_invariant_in_eval_only():
    net = fast_net(BuildOptions(batchnorm=True, tta="flip"))
    assert isinstance(net, TTA)
    x = torch.randn(4, 3, 8, 8)
    net.eval()
    assert torch.allclose(net(x), net(x.flip(3)), atol=1e-5)
    net.train()
    assert not torch.allclose(net(x), net(x.flip(3)), atol=1e-5)
    with pytest.raises(UserError, match="unknown test-time augmentation"):
        fast_net(BuildOptions(tta="rotate"))


def test_triangle_schedule_shape():
    assert triangle_lr(0.0) == pytest.approx(0.2)
    assert triangle_lr(0.23) == pytest.approx(1.0)
    assert triangle_lr(1.0) == pytest.approx(0.07)
    assert triangle_lr(0.1) < triangle_lr(0.2) and triangle_lr(0.5) > triangle_lr(0.9)


def test_biases_get_their_own_learning_rate():
    net = fast_net()
    opt = make_optimizer(net, TrainConfig(lr=0.1, weight_decay=1e-3, bias_lr_scale=64.0))
    weights, biases = opt.param_groups
    assert all(p.ndim > 1 for p in weights["params"]) and all(p.ndim == 1 for p in biases["params"])
    assert (weights["lr_scale"], biases["lr_scale"]) == (1.0, 64.0)
    assert biases["weight_decay"] == pytest.approx(1e-3 / 64)
    frozen = {id(p) for p in net.parameters() if not p.requires_grad}
    assert frozen and not frozen & {id(p) for g in opt.param_groups for p in g["params"]}


def test_lookahead_pulls_toward_the_slow_weights():
    net = torch.nn.Linear(2, 1, bias=False)
    la = Lookahead(net)
    with torch.no_grad():
        net.weight += 1.0
    la.step(1.0, decay=0.5)
    assert torch.allclose(net.weight, la.tensors["weight"])  # fast <- slow
    la2 = Lookahead(net)
    with torch.no_grad():
        net.weight += 1.0
    la2.step(0.0)  # no smoothing at the start
    assert torch.allclose(la2.tensors["weight"], net.weight)


def test_fast_recipe_resumes_exactly(tmp_path):
    """Lookahead state and the light augmentation survive a crash bit-exactly."""
    x, y = tiny_data()
    cfg = TrainConfig(epochs=4, batch_size=16, lr=0.1, schedule="triangle", lookahead=True, bias_lr_scale=8.0,
                      val_every=2, seed=1, label_smoothing=0.2)
    batches = AugmentedBatches(x, y, None, 16, seed=1, translate=2)
    straight = fast_net()
    r1 = fit(straight, batches, x[:32], y[:32], cfg, tmp_path / "a", progress=False)
    with pytest.raises(Crash):
        fit(fast_net(), CrashingBatches(batches, at=2), x[:32], y[:32], cfg, tmp_path / "b", progress=False)
    resumed = fast_net()
    fit(resumed, batches, x[:32], y[:32], cfg, tmp_path / "b", progress=False)
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert [h["val_acc"] is None for h in r1.history] == [True, False, True, False]


def test_plateau_needs_every_epoch_validated():
    with pytest.raises(UserError, match="val_every must be 1"):
        TrainConfig(schedule="plateau", val_every=2)


def test_flip_translate_shifts_with_reflection():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = flip_translate(x, torch.tensor([False]), torch.tensor([2]), torch.tensor([0]), 1)
    assert torch.equal(out[0, 0, 1:, :], torch.tensor([[1.0, 2, 3, 2], [5, 6, 7, 6], [9, 10, 11, 10]]))
    flipped = flip_translate(x, torch.tensor([True]), torch.tensor([1]), torch.tensor([1]), 1)
    assert torch.equal(flipped, x.flip(3))


def test_alternating_flips_alternate():
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    e0, e1, e2 = (alternating_flips(100, e, g()) for e in range(3))
    assert torch.equal(e0, e2) and torch.equal(e1, ~e0)


def test_clipping_is_counted_per_epoch(tmp_path):
    x, y = tiny_data()
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.05, schedule="linear", grad_clip=1e-6)
    r = fit(fast_net(BuildOptions(batchnorm=True)), AugmentedBatches(x, y, None, 16, 0), x, y, cfg, tmp_path,
            progress=False)
    assert [h["clipped"] for h in r.history] == [1.0, 1.0]  # every step exceeds a tiny threshold
    cfg = TrainConfig(epochs=1, batch_size=16, lr=0.05, schedule="linear")
    r = fit(fast_net(BuildOptions(batchnorm=True)), AugmentedBatches(x, y, None, 16, 0), x, y, cfg,
            tmp_path / "none", progress=False)
    assert r.history[0]["clipped"] is None
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["clipped"] == 1.0


def test_bf16_training_is_repeatable(tmp_path):
    """bf16 autocast (the default on AMX CPUs) still gives the same weights for the same seed."""
    from shallowmimic.core.device import set_precision

    set_precision("bf16")
    x, y = tiny_data()
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.1, schedule="triangle", lookahead=True, seed=2)
    nets = []
    for name in ("a", "b"):
        net = fast_net()
        fit(net, AugmentedBatches(x, y, None, 16, seed=2, translate=2), x[:32], y[:32], cfg, tmp_path / name,
            progress=False)
        nets.append(net)
    for (k, a), (_, b) in zip(nets[0].state_dict().items(), nets[1].state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_threads_are_set_explicitly(monkeypatch):
    from shallowmimic.core.device import configure_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("SHALLOWMIMIC_THREADS", "1")
        assert configure_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("SHALLOWMIMIC_THREADS", "two")
        with pytest.raises(UserError, match="SHALLOWMIMIC_THREADS"):
            configure_threads()
    finally:
        torch.set_num_threads(before)


def test_bench_teacher_rejects_a_bad_run_spec():
    from click.testing import CliRunner

    from shallowmimic.cli import main

    r = CliRunner().invoke(main, ["bench", "teacher", "--run", "fast-5"])
    assert r.exit_code == 1 and "unknown teacher variant 'fast-5'" in r.output
    r = CliRunner().invoke(main, ["bench", "teacher", "--run", "fast:x"])
    assert r.exit_code == 1 and "expected VARIANT:EPOCHS" in r.output
    r = CliRunner().invoke(main, ["bench", "teacher", "--run", "fast:6", "--batch-size", "0"])
    assert r.exit_code == 1 and "--batch-size must be at least 1" in r.output


def test_bench_teacher_trains_with_the_given_batch_size_and_lr(tmp_path, monkeypatch):
    import shallowmimic.data.split as split
    import shallowmimic.training.teachers as teachers
    from shallowmimic.cli.bench import bench_teacher

    seen = []

    def fake_train(ds, out, variant, spec, cfg, device, **kw):
        seen.append((Path(out).name, cfg.batch_size, cfg.lr, cfg.epochs))
        raise KeyboardInterrupt  # enough: the configuration is what this test is about

    monkeypatch.setattr(teachers, "train_teacher", fake_train)
    monkeypatch.setattr(split, "split_tensors", lambda ds, cfg, device: None)
    for kw, want in [({}, ("fast-6ep-s0", 512, 0.75, 6)),
                     ({"batch_size": 1024, "lr": 1.5}, ("fast-6ep-b1024-lr1.5-s0", 1024, 1.5, 6))]:
        with pytest.raises(KeyboardInterrupt):
            bench_teacher(None, torch.device("cpu"), tmp_path, [("fast", 6)], **kw)
        assert seen[-1] == want
