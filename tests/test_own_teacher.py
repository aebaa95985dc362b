"""Issue 23, done-when: docs/OWN_TEACHER.md runs as written on an image folder of PNGs made from a
slice of the real CIFAR-10, with one trained teacher and two external ones (ONNX and TorchScript
of teachers trained beforehand); the external teachers give the logits of the models they came
from, the ensemble chooses among all three alike, the report holds the curves, and a file that
changes under the study is a one-line error."""

import contextlib
import io
import json
import os
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from shallowmimic.cli import main

DOC = Path(__file__).parents[1] / "docs" / "OWN_TEACHER.md"


def blocks() -> list[tuple[str, str]]:
    return re.findall(r"```(bash|python|toml)\n(.*?)```", DOC.read_text(), flags=re.S)


def run_block(kind: str, text: str, namespace: dict) -> str:
    """One block of the page: bash lines through the CLI, Python in one shared session, a TOML
    block written to the file its first line names."""
    if kind == "toml":
        name = text.splitlines()[0].removeprefix("# ").strip()
        Path(name).write_text(text)
        return ""
    if kind == "python":
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(text, str(DOC), "exec"), namespace)
        return out.getvalue()
    output = []
    for line in filter(None, (ln.split("#")[0].strip() for ln in text.splitlines())):
        args = shlex.split(line)
        assert args[0] == "shallowmimic", line
        r = CliRunner().invoke(main, [*args[1:], *(["--no-progress"] if args[1] in ("run", "teacher") else [])])
        assert r.exit_code == 0, f"{line}\n{r.output}"
        output.append(r.output)
    return "\n".join(output)


@pytest.fixture(scope="module")
def worked(real_data, tmp_path_factory):
    """The page, run in a fresh directory: (directory, every block's output)."""
    root = tmp_path_factory.mktemp("own")
    os.symlink(real_data, root / "cifar10.npz")
    before = Path.cwd()
    os.chdir(root)
    try:
        namespace: dict = {}
        outputs = [run_block(kind, text, namespace) for kind, text in blocks()]
    finally:
        os.chdir(before)
    return root, outputs


def test_the_page_shows_both_paths():
    kinds = [k for k, _ in blocks()]
    assert kinds.count("bash") >= 2 and kinds.count("python") >= 3 and kinds.count("toml") == 1
    text = DOC.read_text()
    assert "shallowmimic run --preset own.toml" in text and "sm.run_study" in text


def test_external_teachers_give_the_logits_of_the_models_they_came_from(worked):
    from safetensors.torch import load_file

    from shallowmimic.data.sources import load_dataset
    from shallowmimic.data.split import SplitConfig, split_tensors
    from shallowmimic.models.store import load_model
    from shallowmimic.training.batches import predict_logits

    root, _ = worked
    data = split_tensors(load_dataset(root / "my_images"), SplitConfig(val_size=300), "cpu")
    for external, source in (("x00", "teacher-a"), ("x01", "teacher-b")):
        stored = load_file(str(next((root / "runs/own/teachers").glob(f"{external}-*")) / "logits.safetensors"))
        model, _ = load_model(root / "runs" / source)
        for part, images in (("val", data.x_val), ("test", data.x_test)):
            original = predict_logits(model, images)
            assert (stored[part] - original).abs().max() < 1e-4, (external, part)
        record = json.loads((next((root / "runs/own/teachers").glob(f"{external}-*")) / "model.json").read_text())
        assert record["family"] == "external" and len(record["digest"]) == 64


def test_the_ensemble_chooses_among_all_teachers_alike(worked):
    root, outputs = worked
    teachers = sorted((root / "runs/own/teachers").iterdir())
    assert [d.name[:3] for d in teachers] == ["t00", "x00", "x01"]
    results = [{**json.loads((d / "result.json").read_text()), "dir": str(d)} for d in teachers]
    manifest = json.loads(next((root / "runs/own/ensemble").glob("*/ensemble.json")).read_text())
    best = sorted(results, key=lambda r: (-r["val_acc"], r["dir"]))[:2]  # the one rule, for every teacher
    assert manifest["candidates"] == 3
    assert [Path(m["dir"]).name for m in manifest["members"]] == [Path(r["dir"]).name for r in best]
    assert all(r["family"] == "external" for r in results[1:]) and results[0]["family"] == "fast"
    api = outputs[-1]
    assert "ensemble [" in api and re.search(r"^[0-9a-f]{12} \[", api, flags=re.M), api


def test_the_report_holds_the_curves_and_names_the_external_teachers(worked):
    root, outputs = worked
    report = (root / "runs/own/report/report.md").read_text()
    assert "## Training curves" in report and (root / "runs/own/report/curves.png").stat().st_size > 0
    assert "teacher-a.onnx (external)" in report and "teacher-b.pt (external)" in report
    assert "2 external teacher(s)" in report  # among the deviations
    assert "External teachers are not exported or timed" in report
    rerun = outputs[-1]
    assert "training" not in rerun  # the API found the CLI's study done


def test_a_changed_file_under_a_study_is_one_line(worked, tmp_path):
    root, _ = worked
    before = Path.cwd()
    os.chdir(root)
    try:
        script = root / "runs/teacher-b.pt"
        kept = script.read_bytes()
        script.write_bytes(kept + b"\0")
        r = CliRunner().invoke(main, ["run", "--preset", "own.toml", "--data", "my_images", "--out", "runs/own",
                                      "--no-progress"])
        script.write_bytes(kept)
    finally:
        os.chdir(before)
    assert r.exit_code != 0
    last = r.output.strip().splitlines()[-1]
    assert "external teacher runs/teacher-b.pt: its file changed since this study recorded its digest" in last
    assert "Traceback" not in r.output
