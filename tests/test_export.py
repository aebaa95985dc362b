"""Issue 11: ONNX export of every model kind, checked by onnxruntime; inference cost; Figure 2."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from shallowmimic.core.errors import UserError
from shallowmimic.models.checkpoint import BEST, save_weights
from shallowmimic.models.notation import BuildOptions
from shallowmimic.models.result import ModelResult
from shallowmimic.models.solve import solve_student
from shallowmimic.models.store import ModelSpec, save_model_spec
from shallowmimic.models.students import STUDENTS, default_free
from shallowmimic.models.teachers import TEACHERS

onnx = pytest.importorskip("onnx")  # installed by the README's commands and in CI
ort = pytest.importorskip("onnxruntime")

IMAGES = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
LABELS = np.random.default_rng(1).integers(0, 10, 64)


def make_model(directory, role, family, spec, options=None, seed=0, test_acc=0.5):
    options = options or BuildOptions()
    mspec = ModelSpec(role, family, spec, options, 3, 32, 10)
    net = mspec.build("cpu", seed)
    if options.batchnorm:  # non-trivial running statistics, so eval mode differs from training
        with torch.no_grad():
            net.train()(torch.randn(8, 3, 32, 32))
    directory.mkdir(parents=True)
    save_model_spec(directory, mspec, {"setting": {"loss": "mimic"}} if role == "student" else {})
    save_weights(directory / BEST, net)
    ModelResult(role, family, mspec.spec, mspec.params, 0.5, test_acc, 1, 0.0, "cpu").save(directory)
    return directory


def tiny_student(tmp_path, family, budget=20_000):
    spec = solve_student(STUDENTS[family], budget, default_free(STUDENTS[family], budget)).spec
    return make_model(tmp_path / family, "student", family, spec)


def tiny_ensemble(tmp_path):
    fast = TEACHERS["fast"]
    members = [make_model(tmp_path / f"t{i}", "teacher", "fast", "24w@2-8g-16g-16g-gmp", fast.options, seed=i)
               for i in range(2)]
    ens = tmp_path / "ensemble"
    ens.mkdir()
    (ens / "ensemble.json").write_text(json.dumps({
        "k": 2, "params": 1000, "test_acc": 0.6, "members": [{"dir": str(m)} for m in members]}))
    return ens


@pytest.mark.parametrize("family", list(STUDENTS))
def test_every_student_family_exports_and_matches_pytorch(tmp_path, family):
    from shallowmimic.deploy.export import export_onnx

    r = export_onnx(tiny_student(tmp_path, family), IMAGES, LABELS)
    assert r["max_abs_logit_diff"] <= 1e-4 and r["images"] == len(IMAGES) and r["onnx_acc"] == r["torch_acc"]
    model = onnx.load(r["path"])
    onnx.checker.check_model(model)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # the batch axis is dynamic
    stored = json.loads((tmp_path / family / "model.onnx.json").read_text())
    assert stored["max_abs_logit_diff"] == r["max_abs_logit_diff"] and stored["family"] == family


def test_batch_axis_is_dynamic_and_preprocessing_is_inside(tmp_path):
    from shallowmimic.data.split import standardize, to_float
    from shallowmimic.deploy.export import export_onnx, load_deployable, session

    d = tiny_student(tmp_path, "conv2")
    path = export_onnx(d, IMAGES, LABELS)["path"]
    sess = session(path)
    for n in (1, 7, 64):
        assert sess.run(None, {"images": IMAGES[:n]})[0].shape == (n, 10)
    model, _ = load_deployable(d)
    raw = model.net(standardize(to_float(torch.from_numpy(IMAGES[:5])))).detach().numpy()
    np.testing.assert_allclose(sess.run(None, {"images": IMAGES[:5]})[0], raw, atol=1e-4)


def test_teacher_with_tta_and_the_ensemble_export_as_one_graph(tmp_path):
    from shallowmimic.deploy.export import export_onnx, load_deployable

    ens = tiny_ensemble(tmp_path)
    member = export_onnx(tmp_path / "t0", IMAGES, LABELS)
    r = export_onnx(ens, IMAGES, LABELS)
    assert r["path"].endswith("ensemble.onnx") and r["role"] == "ensemble" and r["max_abs_logit_diff"] <= 1e-4
    assert member["max_abs_logit_diff"] <= 1e-4
    # the ensemble graph averages its members' (flip-averaged) logits
    x = torch.from_numpy(IMAGES[:4])
    members = [load_deployable(tmp_path / f"t{i}")[0] for i in range(2)]
    expected = torch.stack([m(x) for m in members]).mean(0).detach().numpy()
    from shallowmimic.deploy.export import session

    np.testing.assert_allclose(session(r["path"]).run(None, {"images": IMAGES[:4]})[0], expected, atol=1e-4)


def test_tampered_graph_wrong_images_and_broken_file_are_one_line_errors(tmp_path, monkeypatch):
    from onnx import numpy_helper

    from shallowmimic.cli import main
    from shallowmimic.deploy.export import check_existing, export_onnx

    d = tiny_student(tmp_path, "conv1")
    path = export_onnx(d, IMAGES, LABELS)["path"]
    model = onnx.load(path)
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    w = numpy_helper.to_array(init).copy()
    w.flat[: w.size // 2] *= 1.5
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, path)
    with pytest.raises(UserError, match="differ from PyTorch's by"):
        check_existing(d, IMAGES, LABELS)
    # through the CLI: exit 1 and one line
    npz = tmp_path / "data.npz"
    np.savez(npz, x_train=IMAGES, y_train=LABELS, x_test=IMAGES, y_test=LABELS)
    r = CliRunner().invoke(main, ["export", str(d), "--check-only", "--data", str(npz)])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "differ from PyTorch's" in r.output, r.output
    # images of another size
    with pytest.raises(UserError, match="takes uint8 images of shape 32x32x3, got uint8 images of shape 16x16x3"):
        check_existing(d, IMAGES[:, :16, :16], LABELS)
    # a truncated file
    (tmp_path / "conv1" / "model.onnx").write_bytes(open(path, "rb").read()[:100])
    with pytest.raises(UserError, match="not a valid ONNX model"):
        check_existing(d, IMAGES, LABELS)


def test_a_failed_check_leaves_no_file(tmp_path, monkeypatch):
    import shallowmimic.deploy.export as export

    d = tiny_student(tmp_path, "mlp1")
    monkeypatch.setattr(export, "TOLERANCE", -1.0)
    with pytest.raises(UserError, match="differ"):
        export.export_onnx(d, IMAGES, LABELS)
    assert not (d / "model.onnx").exists() and not (d / "model.onnx.json").exists()
    assert not [p for p in d.iterdir() if p.name.startswith(".")]  # no temp files either


def test_not_a_model_directory(tmp_path):
    from shallowmimic.deploy.export import export_onnx

    with pytest.raises(UserError, match="neither a model directory"):
        export_onnx(tmp_path, IMAGES, LABELS)


def test_inference_row_counts_flops_and_times_both_runtimes(tmp_path):
    from shallowmimic.deploy.inference import measure, measure_study, read_inference

    d = tiny_student(tmp_path, "conv2")
    row = measure(d, IMAGES, LABELS, runs=100)
    from shallowmimic.deploy.export import load_deployable
    from shallowmimic.models.flops import inference_flops_per_image

    model, _ = load_deployable(d)
    assert row["mflops"] == pytest.approx(inference_flops_per_image(model, torch.from_numpy(IMAGES[:2])) / 1e6)
    assert row["mflops"] > 0 and row["latency_threads"] == 1 and row["throughput_threads"] >= 1
    assert 0 < row["torch_b1_ms"] <= row["torch_b1_p90_ms"] and 0 < row["onnx_b1_ms"] <= row["onnx_b1_p90_ms"]
    assert row["torch_b256_ips"] > 0 and row["onnx_b256_ips"] > 0
    with pytest.raises(UserError, match="at least 100"):
        measure(d, IMAGES, LABELS, runs=10)
    csv_path = tmp_path / "inference.csv"
    rows = measure_study([d], IMAGES, LABELS, csv_path, progress=False)
    again = measure_study([d], IMAGES, LABELS, csv_path, progress=False)  # resumes: nothing re-measured
    assert again[0]["torch_b1_ms"] == pytest.approx(rows[0]["torch_b1_ms"])
    assert read_inference(csv_path)[0]["params"] == rows[0]["params"]


def test_models_of_one_architecture_are_timed_once(tmp_path, monkeypatch):
    import shallowmimic.deploy.inference as inference

    spec = solve_student(STUDENTS["conv2"], 20_000, default_free(STUDENTS["conv2"], 20_000)).spec
    a, b = (make_model(tmp_path / n, "student", "conv2", spec, seed=i) for i, n in enumerate("ab"))
    c = tiny_student(tmp_path, "mlp1")
    calls = []
    real = inference._time
    monkeypatch.setattr(inference, "_time", lambda model, d, *args: calls.append(d) or real(model, d, *args))
    rows = inference.measure_study([a, b, c], IMAGES, LABELS, tmp_path / "inference.csv", progress=False)
    assert calls == [a, c]  # b shares a's architecture
    assert rows[1]["timed_as"] == str(a) and rows[0]["timed_as"] == "" and rows[2]["timed_as"] == ""
    assert rows[1]["onnx_b1_ms"] == rows[0]["onnx_b1_ms"] and (b / "model.onnx").exists()  # exported all the same
    assert inference.read_inference(tmp_path / "inference.csv")[1]["timed_as"] == str(a)


def test_timing_reuses_the_export_jobs_files(tmp_path, monkeypatch):
    """The study exports each model in a job of its own (any worker), then times them in one job
    that must not export again; a model whose export job failed is exported (and reported) there."""
    import shallowmimic.deploy.inference as inference
    from shallowmimic.deploy.export import stored_check

    a, b = tiny_student(tmp_path, "conv1"), tiny_student(tmp_path, "mlp1")
    job = inference.Export(a)
    assert not job.done() and job.path == a / "model.onnx"
    assert job.run(IMAGES, LABELS) is None and job.done()
    assert stored_check(a)["max_abs_logit_diff"] <= 1e-4 and stored_check(b) is None
    exported = []
    real = inference.export_onnx
    monkeypatch.setattr(inference, "export_onnx", lambda d, *a, **k: exported.append(d) or real(d, *a, **k))
    rows = inference.measure_study([a, b], IMAGES, LABELS, tmp_path / "inference.csv", progress=False,
                                   reuse_export=True)
    assert exported == [b]
    assert rows[0]["onnx_max_abs_diff"] == stored_check(a)["max_abs_logit_diff"]
    retrained = make_model(tmp_path / "other", "student", "conv1", json.loads((a / "model.json").read_text())["spec"],
                           seed=5)
    (a / BEST).write_bytes((retrained / BEST).read_bytes())  # new weights: the export is stale
    assert stored_check(a) is None and not job.done()

    # a failed check is recorded for these weights, so no other worker exports it again
    monkeypatch.setattr(inference, "export_onnx", lambda *a, **k: (_ for _ in ()).throw(UserError("mismatch")))
    failing = inference.Export(b)
    assert failing.run(IMAGES, LABELS) == "mismatch" and failing.done() and failing.failure() == "mismatch"
    (b / BEST).write_bytes((retrained / BEST).read_bytes())
    assert failing.failure() is None and not failing.done()  # other weights: try again
    assert failing.forget_failure() and not failing.marker.exists() and not failing.forget_failure()


def test_ensemble_flops_count_every_member_and_view(tmp_path):
    from shallowmimic.deploy.export import Deployable, load_deployable
    from shallowmimic.models.flops import inference_flops_per_image

    ens = tiny_ensemble(tmp_path)
    x = torch.from_numpy(IMAGES[:2])
    one = inference_flops_per_image(load_deployable(tmp_path / "t0")[0], x)
    assert inference_flops_per_image(load_deployable(ens)[0], x) == pytest.approx(2 * one)
    member = load_deployable(tmp_path / "t0")[0]
    plain = Deployable(member.net.net).eval()  # the network without its flip test-time augmentation
    assert one == pytest.approx(2 * inference_flops_per_image(plain, x))  # flip TTA runs it twice


def rows_for_frontier():
    r = lambda name, role, ms, acc, **kw: {"name": name, "role": role, "family": kw.get("family", name),  # noqa
                                          "loss": kw.get("loss", ""), "params": 1000, "mflops": 1.0,
                                          "test_acc": acc, "onnx_b1_ms": ms, "torch_b1_ms": 2 * ms,
                                          "onnx_b256_ips": 100.0, "onnx_max_abs_diff": 1e-6,
                                          "latency_threads": 1, "throughput_threads": 2,
                                          "machine_reference_gflops": 200.0}
    return [r("mlp1", "student", 0.05, 0.45), r("conv1", "student", 0.2, 0.66), r("conv4", "student", 0.3, 0.70),
            r("conv2", "student", 0.5, 0.68), r("conv2h", "student", 0.25, 0.60, family="conv2", loss="hard"),
            r("teacher", "teacher", 5.0, 0.84), r("ensemble of 3", "ensemble", 15.0, 0.86)]


def test_pareto_frontier_and_fastest_model_per_level():
    from shallowmimic.report.frontier import fastest_at_levels, pareto

    rows = rows_for_frontier()
    assert [r["name"] for r in pareto(rows)] == ["mlp1", "conv1", "conv4", "teacher", "ensemble of 3"]
    levels = dict((lvl, r["name"]) for lvl, r in fastest_at_levels(rows))
    assert levels == {50: "conv1", 60: "conv1", 65: "conv1", 70: "conv4", 75: "teacher", 80: "teacher",
                      85: "ensemble of 3"}


def test_report_section_draws_figure2(tmp_path):
    from shallowmimic.report.frontier import section

    md = "\n".join(section(tmp_path, rows_for_frontier()))
    assert (tmp_path / "figure2.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "figure2.svg").exists()
    assert "![Figure 2](figure2.png)" in md and "| 70% | conv4 mimic student" in md
    assert "runs 50.0x faster than the ensemble" in md and "-16.00 points" in md


def test_a_model_result_is_a_typed_record_with_its_own_save_and_load(tmp_path):
    """Issue 22 item 3: result.json is read and written through one record, its details kept."""
    r = ModelResult("student", "conv1", "8c@5-mp3-4L-16fc", 1234, 0.61, None, 3, 1.5, "cpu",
                    {"budget": 1000, "loss": "mimic", "config": {"lr": 0.01}})
    assert not ModelResult.exists(tmp_path)
    r.save(tmp_path)
    back = ModelResult.load(tmp_path)
    assert back == r and back.details["config"] == {"lr": 0.01}
    tested = back.with_test({"test_acc": 0.6, "test_n": 10, "test_correct": "abc"})
    assert tested.test_acc == 0.6 and tested.details["test_n"] == 10 and back.test_acc is None
    (tmp_path / "result.json").write_text(json.dumps({"role": "student", "test_acc": 0.5}))
    with pytest.raises(UserError, match=r"result.json lacks device, epochs, family"):
        ModelResult.load(tmp_path)
    with pytest.raises(UserError, match="unfinished model"):
        ModelResult.load(tmp_path / "nothing")
    (tmp_path / "result.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="not a JSON object"):
        ModelResult.load(tmp_path)
