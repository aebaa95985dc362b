
import pytest
import torch

from shallowmimic.core.device import precision
from shallowmimic.core.errors import UserError
from shallowmimic.data.split import standardize
from shallowmimic.distill.ensemble import Ensemble, Standardized, select_best
from shallowmimic.distill.transfer import TransferBatches, TransferConfig, generate, render
from shallowmimic.models.layers import build
from shallowmimic.models.notation import parse_spec


class Recorder(torch.nn.Module):
    """An ensemble that remembers every input it labelled."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x):
        self.seen.append(x.clone())
        return self.inner(x)


def tiny_ensemble(classes=4):
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(Standardized(build(parse_spec("4c-mp-8fc"), 3, 8, classes)).eval())
    return Ensemble(members).eval()  # fed the augmented images in [0, 1], as load_ensemble's


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (50, 8, 8, 3), dtype=torch.uint8, generator=g), torch.arange(50) % 4


def test_replay_is_bit_identical_and_logits_match(tmp_path, images):
    x, y = images
    ens = Recorder(tiny_ensemble())
    cfg = TransferConfig(epochs=3, seed=7)
    m = generate(ens, x, cfg, tmp_path, {"ensemble": "test"}, progress=False, batch_size=20)
    assert m["epochs"] == 3 and m["images_per_epoch"] == 50 and m["classes"] == 4
    assert m["bytes"] < m["materialized_bytes"] * 3  # tiny images: headers dominate; still compact
    generated = torch.cat(ens.seen).split(50)  # per epoch, in stored order
    batches = TransferBatches(tmp_path, x, y, batch_size=10)
    for e in range(3):
        xs, ys, zs = zip(*batches.epoch(e), strict=True)
        replayed = torch.cat(xs)
        # the very images the ensemble labelled, standardized as its members standardize them
        assert torch.equal(replayed, standardize(generated[e]))
        with torch.no_grad():
            fresh = ens.inner(generated[e])
        assert torch.allclose(torch.cat(zs), fresh, atol=2e-3, rtol=1e-3)  # float16 storage
        order = batches.shard(e)["order"].long()
        assert torch.equal(torch.cat(ys), y[order])
    # student epochs beyond the stored ones cycle through them
    assert torch.equal(torch.cat([b[0] for b in batches.epoch(3)]), standardize(generated[0]))


def test_killed_generation_resumes_to_the_same_checksums(tmp_path, images):
    x, _ = images
    cfg = TransferConfig(epochs=4, seed=3)
    full = generate(tiny_ensemble(), x, cfg, tmp_path / "a", {"ensemble": "e"}, progress=False)
    with pytest.raises(KeyboardInterrupt):
        generate(tiny_ensemble(), x, cfg, tmp_path / "b", {"ensemble": "e"}, progress=False, stop_after=2)
    assert sorted(p.name for p in (tmp_path / "b").glob("epoch_*")) == ["epoch_0000.safetensors",
                                                                       "epoch_0001.safetensors"]
    assert not (tmp_path / "b" / "manifest.json").exists()
    resumed = generate(tiny_ensemble(), x, cfg, tmp_path / "b", {"ensemble": "e"}, progress=False)
    assert resumed["shards"] == full["shards"]


def test_epochs_labelled_separately_make_the_same_transfer_set(tmp_path, images):
    """Workers label stored epochs in parallel (`only`); the manifest comes from a last call."""
    x, _ = images
    cfg = TransferConfig(epochs=3, seed=3)
    full = generate(tiny_ensemble(), x, cfg, tmp_path / "a", {"ensemble": "e"}, progress=False)
    out = tmp_path / "b"
    assert generate(tiny_ensemble(), x, cfg, out, {"ensemble": "e"}, progress=False, only=[2, 0]) is None
    assert sorted(p.name for p in out.iterdir()) == ["epoch_0000.safetensors", "epoch_0002.safetensors"]
    first = (out / "epoch_0000.safetensors").stat().st_mtime_ns
    ens = Recorder(tiny_ensemble())
    merged = generate(ens, x, cfg, out, {"ensemble": "e"}, progress=False)
    assert merged["shards"] == full["shards"]
    assert len(torch.cat(ens.seen)) == 50  # only the missing epoch was labelled
    assert (out / "epoch_0000.safetensors").stat().st_mtime_ns == first


def test_materialize_writes_the_rendered_images(tmp_path, images):
    from safetensors.torch import load_file

    x, _ = images
    m = generate(tiny_ensemble(), x, TransferConfig(epochs=1, materialize=True), tmp_path, {}, progress=False)
    imgs = load_file(str(tmp_path / "images_0000.safetensors"))["images"]
    assert imgs.shape == (50, 8, 8, 3) and imgs.dtype == torch.uint8 and m["materialized"]


def test_mismatched_split_is_refused(tmp_path, images):
    x, y = images
    generate(tiny_ensemble(), x, TransferConfig(epochs=1), tmp_path, {}, progress=False)
    with pytest.raises(UserError, match="regenerate"):
        TransferBatches(tmp_path, x[:40], y[:40], 10)
    with pytest.raises(UserError, match="not a finished transfer set"):
        TransferBatches(tmp_path / "nope", x, y, 10)


def test_render_is_batch_independent(images):
    from shallowmimic.augment.transforms import STUDENT_HSV, sample_params

    x, _ = images
    rec = sample_params(50, 8, STUDENT_HSV, torch.Generator().manual_seed(0))
    assert torch.equal(render(x, rec), torch.cat([render(x[:7], rec[:7]), render(x[7:], rec[7:])]))


def test_ensemble_selection():
    ts = [{"dir": f"t{i}", "val_acc": v} for i, v in enumerate([0.5, 0.9, 0.7, 0.9])]
    assert [t["dir"] for t in select_best(ts, 3)] == ["t1", "t3", "t2"]
    with pytest.raises(UserError, match="only 4 finished teachers"):
        select_best(ts, 5)


def test_ensemble_averages_logits():
    ens = tiny_ensemble()
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        expected = (ens.members[0](x) + ens.members[1](x)) / 2
    assert torch.allclose(ens(x), expected)


def test_images_per_epoch_draws_a_fresh_subset(tmp_path, images):
    x, y = images
    m = generate(tiny_ensemble(), x, TransferConfig(epochs=2, seed=1, images=20), tmp_path, {}, progress=False)
    assert (m["images_per_epoch"], m["split_images"]) == (20, 50)
    batches = TransferBatches(tmp_path, x, y, batch_size=10)
    assert len(batches) == 2
    orders = [batches.shard(e)["order"] for e in range(2)]
    assert all(len(o) == len(set(o.tolist())) == 20 for o in orders) and not torch.equal(*orders)
    with pytest.raises(UserError, match="between 1 and the split's 50"):
        generate(tiny_ensemble(), x, TransferConfig(epochs=1, images=51), tmp_path / "bad", {}, progress=False)


def test_rendered_epochs_are_cached_and_identical(tmp_path, images):
    from shallowmimic.distill import transfer

    x, y = images
    generate(tiny_ensemble(), x, TransferConfig(epochs=2, seed=2), tmp_path, {}, progress=False)
    transfer._RENDERED.clear()
    first = torch.cat([b[0] for b in TransferBatches(tmp_path, x, y, 10).epoch(1)])
    assert len(transfer._RENDERED) == 1  # a second student in this process reuses the render
    again = torch.cat([b[0] for b in TransferBatches(tmp_path, x, y, 10).epoch(1)])
    s = TransferBatches(tmp_path, x, y, 10).shard(1)
    from shallowmimic.augment.transforms import AugParams

    fresh = render(x[s["order"].long()], AugParams(s["hsv"], s["geom"]))
    assert torch.equal(first, fresh) and torch.equal(again, fresh)
    old = transfer.RENDER_CACHE_BYTES
    try:  # an epoch larger than the budget is rendered but not kept
        transfer.RENDER_CACHE_BYTES = 10
        transfer._RENDERED.clear()
        list(TransferBatches(tmp_path, x, y, 10).epoch(0))
        assert not transfer._RENDERED
    finally:
        transfer.RENDER_CACHE_BYTES = old


@pytest.mark.parametrize("change", ["ensemble", "seed", "split", "images"])
def test_shards_made_otherwise_are_refused_or_rebuilt(tmp_path, images, change):
    """Issue 9 item 1: resuming into a directory checks each shard's provenance."""
    x, _ = images
    for name in ("ens-a", "ens-b"):  # two ensembles: their manifests differ
        (tmp_path / name).mkdir()
        (tmp_path / name / "ensemble.json").write_text(f'{{"members": ["{name}"]}}')
    src = {"ensemble": str(tmp_path / "ens-a"), "split_fingerprint": "f1"}
    out = tmp_path / "ts"
    generate(tiny_ensemble(), x, TransferConfig(epochs=2, seed=1), out, src, progress=False)
    before = (out / "epoch_0000.safetensors").read_bytes()
    same_elsewhere = {**src, "ensemble": str(tmp_path / "ens-b" / ".." / "ens-a")}
    generate(tiny_ensemble(), x, TransferConfig(epochs=2, seed=1), out, same_elsewhere, progress=False)
    cfg, other = TransferConfig(epochs=2, seed=1), dict(src)
    if change == "ensemble":
        other["ensemble"] = str(tmp_path / "ens-b")
    elif change == "seed":
        cfg = TransferConfig(epochs=2, seed=2)
    elif change == "split":
        other["split_fingerprint"] = "f2"
    else:
        cfg = TransferConfig(epochs=2, seed=1, images=30)
    with pytest.raises(UserError, match="made by another ensemble or settings"):
        generate(tiny_ensemble(), x, cfg, out, other, progress=False)
    assert (out / "epoch_0000.safetensors").read_bytes() == before  # nothing overwritten
    m = generate(tiny_ensemble(), x, cfg, out, other, progress=False, rebuild=True)
    assert m["seed"] == cfg.seed and (out / "epoch_0000.safetensors").read_bytes() != before
    generate(tiny_ensemble(), x, cfg, out, other, progress=False)  # now it resumes quietly


def test_readers_check_split_and_digests(tmp_path, images):
    """Issue 9 item 2: a transfer set from another split, or a changed shard, is refused on load."""
    from shallowmimic.distill import transfer

    x, y = images
    generate(tiny_ensemble(), x, TransferConfig(epochs=2), tmp_path, {"split_fingerprint": "f1"}, progress=False)
    with pytest.raises(UserError, match="another train/validation split"):
        TransferBatches(tmp_path, x, y, 10, split_fingerprint="f2")
    batches = TransferBatches(tmp_path, x, y, 10, split_fingerprint="f1")
    batches.shard(0)
    calls = []
    real = transfer.file_digest
    transfer.file_digest = lambda p: calls.append(p) or real(p)
    try:
        batches.shard(0)
        assert not calls  # digested once per process, not per epoch
    finally:
        transfer.file_digest = real
    # a shard swapped for another epoch's (same shape, valid file) no longer matches its digest
    (tmp_path / "epoch_0001.safetensors").write_bytes((tmp_path / "epoch_0000.safetensors").read_bytes())
    with pytest.raises(UserError, match="does not match the digest"):
        list(batches.epoch(1))


def test_ensemble_refuses_teachers_from_another_split(tmp_path):
    """Issue 9 item 2: `ensemble --teachers` with a teacher trained on another split."""
    import json

    from shallowmimic.distill.ensemble import build_ensemble

    d = tmp_path / "t0"
    d.mkdir()
    (d / "model.json").write_text(json.dumps({"split_fingerprint": "other"}))
    from shallowmimic.data.split import SplitData

    empty = torch.zeros(0)
    with pytest.raises(UserError, match="trained on another train/validation split"):
        build_ensemble([{"dir": str(d), "val_acc": 0.5}], 1, SplitData(*[empty] * 6, fingerprint="this"),
                       tmp_path / "e", "cpu")


def tiny_split(tmp_path):
    """A tiny real dataset on disk, its split and the split's tensors, for teachers to train on."""
    import numpy as np

    from shallowmimic.data.sources import load_dataset
    from shallowmimic.data.split import SplitConfig, split_tensors

    from .conftest import tiny_arrays

    np.savez(tmp_path / "d.npz", **tiny_arrays(n_train=80, n_test=20, size=8, classes=4))
    ds = load_dataset(tmp_path / "d.npz")
    split = SplitConfig(val_size=30, seed=0)
    return ds, split, split_tensors(ds, split, "cpu")


def train_tiny_teacher(out, ds, split, data, seed=0, evaluate_test=True):
    from shallowmimic.training.teachers import teacher_config, train_teacher

    train_teacher(ds, out, "fast", "4c-mp-8fc", teacher_config("fast", epochs=1, batch_size=16, seed=seed), "cpu",
                  split, progress=False, data=data, evaluate_test=evaluate_test)


def test_the_ensemble_reads_its_members_logits_from_the_teacher_jobs(tmp_path, monkeypatch):
    """Each teacher job stores its validation and test logits; the ensemble is built from them
    without running a member, with the same numbers as running them, and a file that no longer
    matches (retrained weights, other images) is ignored, not trusted."""
    from shallowmimic.distill import ensemble
    from shallowmimic.distill.ensemble import build_ensemble, find_teachers
    from shallowmimic.models.checkpoint import BEST
    from shallowmimic.training.logits import LOGITS, stored_logits

    ds, split, data = tiny_split(tmp_path)
    for seed in (0, 1):
        train_tiny_teacher(tmp_path / "teachers" / f"t{seed}", ds, split, data, seed)
    teachers = find_teachers([tmp_path / "teachers"])
    assert all((tmp_path / "teachers" / f"t{s}" / LOGITS).exists() for s in (0, 1))

    def loaded(*a, **k):
        raise AssertionError("a member was run although its logits were stored")

    monkeypatch.setattr(ensemble, "load_model", loaded)
    cached = build_ensemble(teachers, 2, data, tmp_path / "cached", "cpu")
    monkeypatch.undo()
    for s in (0, 1):
        (tmp_path / "teachers" / f"t{s}" / LOGITS).unlink()
    fresh = build_ensemble(teachers, 2, data, tmp_path / "fresh", "cpu")
    for key in ("val_acc", "test_acc", "test_correct"):
        assert cached[key] == fresh[key]
        assert [m[key] for m in cached["members"]] == [m[key] for m in fresh["members"]]

    t0 = tmp_path / "teachers" / "t0"
    # the finished teacher's run resumes to its end and stores its logits again
    train_tiny_teacher(t0, ds, split, data)
    here = precision(torch.device("cpu"))
    assert stored_logits(t0, "test", data.x_test, here) is not None
    assert stored_logits(t0, "test", data.x_test, {"fp32": "bf16", "bf16": "fp32"}[here]) is None
    assert stored_logits(t0, "test", data.x_test[:-1], here) is None  # other images
    assert stored_logits(t0, "test", data.x_test.flip(0), here) is None
    (t0 / BEST).write_bytes((t0 / BEST).read_bytes() + b" ")  # other weights
    assert stored_logits(t0, "val", data.x_val, here) is None
    (t0 / LOGITS).write_bytes(b"not safetensors")
    assert stored_logits(t0, "val", data.x_val, here) is None


def test_a_teacher_search_trial_stores_validation_logits_only(tmp_path, monkeypatch):
    """Search trials keep the test set out of sight: their test logits are computed by the
    ensemble, their validation logits read."""
    from shallowmimic.distill import ensemble
    from shallowmimic.distill.ensemble import build_ensemble, find_teachers
    from shallowmimic.training.logits import stored_logits

    ds, split, data = tiny_split(tmp_path)
    t = tmp_path / "trial"
    train_tiny_teacher(t, ds, split, data, evaluate_test=False)
    here = precision(torch.device("cpu"))
    assert stored_logits(t, "val", data.x_val, here) is not None
    assert stored_logits(t, "test", data.x_test, here) is None
    runs = []
    real = ensemble.predict_logits
    monkeypatch.setattr(ensemble, "predict_logits", lambda m, x, *a: runs.append(len(x)) or real(m, x, *a))
    manifest = build_ensemble(find_teachers([t]), 1, data, tmp_path / "e", "cpu")
    assert runs == [len(data.x_test)] and manifest["members"][0]["test_n"] == len(data.x_test)


def test_stored_bytes_per_image_match_the_docs_and_the_shards(tmp_path, images):
    """Issue 9 item 8: the docs quote the code's figure, and the code's figure is the shards'."""
    import re
    from pathlib import Path

    from shallowmimic.distill.transfer import bytes_per_image

    x, _ = images
    m = generate(tiny_ensemble(classes=10), x, TransferConfig(epochs=1), tmp_path, {}, progress=False)
    from safetensors.torch import load_file

    shard = load_file(str(tmp_path / "epoch_0000.safetensors"))
    payload = sum(t.numel() * t.element_size() for t in shard.values())
    assert payload == 50 * bytes_per_image(10) == 50 * m["bytes_per_image"]
    docs = (Path(__file__).parents[1] / "docs" / "STUDY.md").read_text()
    quoted = re.search(r"(\d+) bytes per image", docs.replace("\n", " "))
    assert quoted and int(quoted.group(1)) == bytes_per_image(10)


def test_precision_is_an_argument_of_one_call_and_a_study_keeps_its_own(tmp_path):
    """Issue 22 item 5: `precision=` holds for the one call (its stored logits say bf16) and
    the caller's setting is back after it, also when the call fails; a study's config sets
    the precision of its own work only."""
    from shallowmimic.core.device import compute
    from shallowmimic.study.config import load_study
    from shallowmimic.study.run import dry_run
    from shallowmimic.training.logits import stored_logits
    from shallowmimic.training.teachers import teacher_config, train_teacher

    cpu = torch.device("cpu")
    ds, split, data = tiny_split(tmp_path)
    cfg = teacher_config("fast", epochs=1, batch_size=16)
    train_teacher(ds, tmp_path / "t", "fast", "4c-mp-8fc", cfg, "cpu", split, progress=False, data=data,
                  precision="bf16")
    assert stored_logits(tmp_path / "t", "val", data.x_val, "bf16") is not None
    assert precision(cpu) == "fp32"  # the caller's (tests run in fp32)
    with pytest.raises(UserError, match="precision 'fp8'"):
        train_teacher(ds, tmp_path / "u", "fast", None, cfg, "cpu", split, data=data, precision="fp8")
    with compute(precision="bf16", compile=False):
        assert precision(cpu) == "bf16"
        with pytest.raises(KeyError), compute(precision="fp32"):
            raise KeyError("the work failed")
        assert precision(cpu) == "bf16"
    assert precision(cpu) == "fp32"
    import numpy as np

    from .conftest import tiny_arrays

    np.savez(tmp_path / "d32.npz", **tiny_arrays(n_train=80, n_test=20, size=32, classes=10))
    tiny = load_study("smoke", ['precision="bf16"', "data.val_size=30", "data.train_limit=0", "data.val_limit=0"])
    dry_run(tiny, tmp_path / "study", tmp_path / "d32.npz", echo=lambda s: None)
    assert precision(cpu) == "fp32"
