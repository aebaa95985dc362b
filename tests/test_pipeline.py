"""End to end: `shallowmimic run --preset smoke` on a slice of the real CIFAR-10 (never skipped in CI)."""

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from shallowmimic.cli import main
from shallowmimic.core.files import current_umask
from shallowmimic.data.download import ENV_DATA


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def mtimes(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*.safetensors")}


SYNTHETIC = {"n_train": 1700, "n_test": 200, "val_size": 500}


@pytest.fixture(scope="module", params=["synthetic", "real"])
def smoke(request, tmp_path_factory):
    """The smoke study, on 32x32 synthetic data everywhere and on a slice of the real
    CIFAR-10 where it is available (always in CI). Yields (out, output, data args, test size)."""
    import numpy as np

    from .conftest import tiny_arrays

    if request.param == "real":
        data = ["--data", request.getfixturevalue("real_data")]
        n_test = 10_000
    else:
        path = tmp_path_factory.mktemp("data") / "synthetic.npz"
        np.savez(path, **tiny_arrays(n_train=SYNTHETIC["n_train"], n_test=SYNTHETIC["n_test"], size=32))
        data = ["--data", path, "--set", f"data.val_size={SYNTHETIC['val_size']}"]
        n_test = SYNTHETIC["n_test"]
    out = tmp_path_factory.mktemp("study")
    r = run("run", "--preset", "smoke", "--out", out, *data, "--device", "cpu", "--no-progress")
    assert r.exit_code == 0, r.output
    return out, r.output, data, n_test


def test_smoke_study_writes_the_report(smoke):
    out, output, _, n_test = smoke
    rep = out / "report"
    for name in ("results.csv", "results.json", "report.md", "report.html", "figure1.png", "figure1.svg",
                 "curves.png", "curves.svg"):
        assert (rep / name).stat().st_size > 0, name
    assert (rep / "figure1.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(open(rep / "results.csv")))
    teachers = [r for r in rows if r["role"] == "teacher"]
    students = [r for r in rows if r["role"] == "student"]
    assert len(teachers) == 2
    assert sorted((r["family"], r["loss"]) for r in students) == sorted(
        (f, loss) for f in ("mlp1", "conv1", "conv2") for loss in ("mimic", "hard"))
    for r in students:
        assert abs(int(r["params"]) - int(r["budget"])) <= 0.005 * int(r["budget"]), r
        assert 0.0 <= float(r["test_acc"]) <= 1.0 and r["device"] == "cpu"
    md = (rep / "report.md").read_text()
    for heading in ("## Findings", "## Teachers and ensemble", "Table 2 layout", "Table 1 layout", "(92.78)",
                    "## Training curves", "![Training curves](curves.png)"):
        assert heading in md
    assert sum(line.startswith(("  PASS", "  FAIL", "  INCONCLUSIVE", "  N/A")) for line in output.splitlines()) == 4
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["config"]["name"] == "smoke" and run_json["provenance"]["torch"]
    assert run_json["machine_reference_gflops"] > 0 and run_json["precision"] in ("fp32", "bf16")
    assert [st["stage"] for st in run_json["stages"]] == ["teachers", "ensemble", "transfer set", "students",
                                                          "inference"]
    assert all(st["wall_s"] >= 0 and st["reference_gflops"] > 0 for st in run_json["stages"])
    # statistics: every model keeps its per-test-image correctness; tables carry intervals
    for r in students:
        result = json.loads((out / r["dir"] / "result.json").read_text()
                            if not r["dir"].startswith("/") else open(r["dir"] + "/result.json").read())
        assert result["test_n"] == n_test and len(result["test_correct"]) == 4 * math.ceil(math.ceil(n_test / 8) / 3)
    ens = json.loads(next(out.glob("ensemble/*/ensemble.json")).read_text())
    assert "test_correct" in ens and "test_correct" in ens["best_member"]
    assert "## Deviations from the protocol" in md and "label smoothing" in md
    assert md.count(" [") >= 6  # mean [lo, hi] cells and comparison intervals
    findings = json.loads((rep / "results.json").read_text())["findings"]
    assert all(f["status"] == "N/A" or f["comparisons"] for f in findings)
    # inference cost (issue 11): every model and the ensemble exported, checked and timed; Figure 2
    cost = list(csv.DictReader(open(out / "inference.csv")))
    assert sorted(r["role"] for r in cost) == ["ensemble"] + ["student"] * 6 + ["teacher"] * 2
    assert all(float(r["onnx_max_abs_diff"]) <= 1e-4 and float(r["onnx_b1_ms"]) > 0 for r in cost)
    assert len(list(out.glob("students/*/model.onnx"))) == 6 and list(out.glob("ensemble/*/ensemble.onnx"))
    assert (rep / "figure2.png").read_bytes()[:4] == b"\x89PNG" and "## Inference cost" in md
    assert "Fastest model at or above each accuracy level" in md
    # every file as open() would make it under the umask (a study shared by a group stays readable)
    mode = 0o666 & ~current_umask()
    assert {str(p.relative_to(out)): oct(p.stat().st_mode & 0o666) for p in out.rglob("*")
            if p.is_file() and p.stat().st_mode & 0o666 != mode} == {}


def test_rerun_does_no_training(smoke):
    out, _, data, _ = smoke
    before = mtimes(out)
    r = run("run", "--preset", "smoke", "--out", out, *data, "--device", "cpu", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "teachers    2/2 done" in r.output and "students    6/6 done" in r.output
    assert "student 1/6" not in r.output
    assert mtimes(out) == before
    report = (out / "report" / "report.md").stat().st_mtime_ns
    r = run("run", "--preset", "smoke", "--out", out, *data, "--device", "cpu", "--no-progress", "--no-report")
    assert r.exit_code == 0 and "left to another worker" in r.output, r.output
    assert (out / "report" / "report.md").stat().st_mtime_ns == report  # run.json only


def test_the_same_data_by_another_path_trains_nothing(smoke, tmp_path, monkeypatch):
    """Issue 21 item 1: every job's key held the data's path as typed, so the same file by a
    relative path, copied elsewhere, or found through SHALLOWMIMIC_DATA trained everything again."""
    out, _, data, _ = smoke
    path, rest = Path(data[1]).resolve(), data[2:]
    copy = tmp_path / "elsewhere" / path.name
    copy.parent.mkdir()
    shutil.copy(path, copy)
    before = mtimes(out)
    monkeypatch.chdir(path.parent)
    for args, env in ((["--data", path.name], None), (["--data", copy], None), ([], copy)):
        if env:
            monkeypatch.setenv(ENV_DATA, str(env))
        r = run("run", "--preset", "smoke", "--out", out, *args, *rest, "--device", "cpu", "--no-progress",
                "--no-report")
        assert r.exit_code == 0, r.output
        assert "teachers    2/2 done" in r.output and "students    6/6 done" in r.output, r.output
    assert mtimes(out) == before


def test_changed_setting_recomputes_only_what_depends_on_it(smoke):
    out, _, data, _ = smoke
    before = mtimes(out)
    r = run("run", "--preset", "smoke", "--out", out, *data, "--device", "cpu", "--no-progress",
            "--set", "students.epochs=1", "--set", 'students.families=["conv1"]', "--set", "students.hard_budgets=[]")
    assert r.exit_code == 0, r.output
    after = mtimes(out)
    assert all(after[p] == t for p, t in before.items())  # teachers, ensemble, transfer set untouched
    new = [p for p in after if p not in before]
    assert new and all("students" in str(p) and "conv1" in str(p) for p in new)


def test_unknown_override_is_a_one_line_error(tiny_npz, tmp_path):
    r = run("run", "--preset", "smoke", "--out", tmp_path, "--data", tiny_npz, "--set", "students.epoch=3")
    assert r.exit_code == 1
    assert "unknown key(s) epoch" in r.output and "known: families" in r.output
    r = run("run", "--preset", "nope", "--out", tmp_path)
    assert r.exit_code == 1 and "unknown preset 'nope'" in r.output


def test_run_with_searches_on_tiny_data(tmp_path):
    """`run` with a teacher study and per-setting student studies (GP sampler), on 8x8 images."""
    import numpy as np

    from .conftest import tiny_arrays

    np.savez(tmp_path / "d.npz", **tiny_arrays(n_train=240, n_test=30, size=8, classes=3))
    out = tmp_path / "study"
    sets = ["data.val_size=40", "data.train_limit=0", "data.val_limit=0", "search.teacher_trials=3",
            "search.student_trials=2", "search.startup=2", "search.heartbeat=5", "ensemble.k=2",
            "teachers.epochs=1", "students.epochs=1", 'students.families=["conv1"]', 'students.budgets=["20k"]',
            'students.hard_budgets=["20k"]']
    args = ["run", "--preset", "smoke", "--out", out, "--data", tmp_path / "d.npz", "--device", "cpu",
            "--no-progress"] + [x for s in sets for x in ("--set", s)]
    r = run(*args)
    assert r.exit_code == 0, r.output
    run_json = json.loads((out / "run.json").read_text())
    studies = {s["study"].split("-")[0] + "-" + s.get("loss", "teacher"): s for s in run_json["searches"]}
    assert set(studies) == {"teachers-teacher", "students-mimic", "students-hard"}
    assert studies["teachers-teacher"]["completed"] == 3 and studies["teachers-teacher"]["sampler"] == "GPSampler"
    assert len(run_json["teachers"]) == 3 and len(run_json["ensemble"]["members"]) == 2
    rows = list(csv.DictReader(open(out / "report" / "results.csv")))
    students = [r for r in rows if r["role"] == "student"]
    assert len(students) == 4 and all(r["test_acc"] for r in students)  # the best 5 of each see the test set
    md = (out / "report" / "report.md").read_text()
    assert "## Hyperparameter search" in md and "GPSampler" in md
    assert (out / "report" / "search.png").exists()
    before = mtimes(out)
    r = run(*args)  # finished studies are not searched again
    assert r.exit_code == 0 and mtimes(out) == before


def test_stage_commands_on_the_smoke_study(smoke, tmp_path):
    """ensemble -> transfer -> student train -> report, each as its own command."""
    out, _, data, _ = smoke
    val_size = ["--val-size", str(SYNTHETIC["val_size"])] if "--set" in data else []
    common = [*data[:2], "--device", "cpu", "--train-limit", "1000", "--val-limit", "500", *val_size]
    r = run("ensemble", "--teachers", out / "teachers", "--k", "2", "--out", tmp_path / "ens", *common)
    assert r.exit_code == 0, r.output
    assert "ensemble of 2" in r.output
    manifest = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert len(manifest["members"]) == 2 and manifest["candidates"] == 2
    r = run("transfer", "--ensemble", tmp_path / "ens", "--epochs", "1", "--out", tmp_path / "ts", "--materialize",
            "--no-progress", *common)
    assert r.exit_code == 0, r.output
    assert "MiB stored vs" in r.output and (tmp_path / "ts" / "images_0000.safetensors").exists()
    student = ["student", "train", "--family", "conv1", "--budget", "50k", "--transfer", tmp_path / "ts",
               "--out", tmp_path / "s", "--epochs", "1", "--no-progress", *common]
    r = run(*student)
    assert r.exit_code == 0, r.output
    assert "budget 50,000" in r.output and "mimic" in r.output
    r = run(*student)
    assert r.exit_code == 1 and "pass --resume" in r.output
    other = [a if a != tmp_path / "s" else tmp_path / "s2" for a in student[:-len(common)]]
    r = run(*other, *data[:2], "--device", "cpu", *val_size)  # another split than the transfer set
    assert r.exit_code == 1 and "regenerate it" in r.output
    r = run("report", out)
    assert r.exit_code == 0 and "wrote" in r.output
    r = run("report", tmp_path)
    assert r.exit_code == 1 and "not a study directory" in r.output
    r = run("bench", "infer", out, *data[:2])  # every row already measured: reused, report rewritten
    assert r.exit_code == 0, r.output
    assert "onnx b1 ms" in r.output and "ensemble of 2" in r.output and "threads: batch-1 latency 1" in r.output
    r = run("export", tmp_path / "ens", *data[:2])  # the ensemble made above, as one graph
    assert r.exit_code == 0 and "ensemble.onnx: written" in r.output, r.output
    r = run("bench", "infer", tmp_path, *data[:2])
    assert r.exit_code == 1 and "not a study directory" in r.output


@pytest.fixture
def synthetic_args(tmp_path):
    import numpy as np

    from .conftest import tiny_arrays

    np.savez(tmp_path / "d.npz", **tiny_arrays(n_train=700, n_test=50, size=32))
    sets = ["data.val_size=200", "data.train_limit=0", "data.val_limit=0", "teachers.epochs=1",
            "transfer.epochs=1", "students.epochs=1", 'students.families=["conv1"]', "students.hard_budgets=[]"]
    return ["run", "--preset", "smoke", "--out", tmp_path / "study", "--data", tmp_path / "d.npz", "--device", "cpu",
            "--no-progress"] + [x for s in sets for x in ("--set", s)]


def test_diverged_teacher_stops_the_study_with_its_name(synthetic_args):
    """Issue 9 item 5: a teacher cannot be dropped silently; nothing is marked, so it is retried."""
    r = run(*synthetic_args, "--set", "teachers.lr=1e9", "--set", "teachers.batch_size=64")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.output.strip().splitlines()[-1].startswith("Error: teacher 0 diverged, so the study stops")
    assert not list((synthetic_args[4] / "teachers").rglob("failed.json"))


def test_failed_student_stays_failed_until_retry_failed(synthetic_args):
    """Issue 9 item 5: failed.json keeps a diverged student failed; --retry-failed trains it again."""
    diverge = ["--set", "students.lr.mimic=1e9", "--set", "students.grad_clip.mimic=0.0"]
    r = run(*synthetic_args, *diverge)
    assert r.exit_code == 0 and "failed:" in r.output
    marker = next((synthetic_args[4] / "students").rglob("failed.json"))
    r = run(*synthetic_args, *diverge)
    assert "retrying" not in r.output and "student 1/1" not in r.output
    r = run(*synthetic_args, *diverge, "--retry-failed")
    assert "retrying failed job conv1-50k-mimic-r0" in r.output and "student 1/1" in r.output
    assert marker.exists()  # the same settings fail the same way again


def test_tune_with_zero_trials_is_an_error(tiny_npz, tmp_path):
    r = run("tune", "teacher", "--data", tiny_npz, "--out", tmp_path, "--trials", "0", "--device", "cpu")
    assert r.exit_code == 1 and "trials must be at least 1" in r.output


def test_only_the_best_by_validation_see_the_test_set(tmp_path, monkeypatch):
    """Issue 9 item 11: with more trials than the report keeps, the others never touch test."""
    import numpy as np

    from shallowmimic.report import results
    from shallowmimic.study import stages

    from .conftest import tiny_arrays

    monkeypatch.setattr(stages, "TOP", 1)
    monkeypatch.setattr(results, "TOP", 1)
    np.savez(tmp_path / "d.npz", **tiny_arrays(n_train=240, n_test=30, size=8, classes=3))
    sets = ["data.val_size=40", "data.train_limit=0", "data.val_limit=0", "teachers.epochs=1", "ensemble.k=2",
            "search.student_trials=3", "search.startup=3", "search.heartbeat=5", "students.epochs=1",
            'students.families=["conv1"]', 'students.budgets=["20k"]', "students.hard_budgets=[]",
            'teachers.specs=["8c-mp-16fc"]', 'teachers.variant="bn"']
    r = run("run", "--preset", "smoke", "--out", tmp_path / "s", "--data", tmp_path / "d.npz", "--device", "cpu",
            "--no-progress", *[x for s in sets for x in ("--set", s)])
    assert r.exit_code == 0, r.output
    trials = [json.loads(p.read_text()) for p in (tmp_path / "s" / "trials").rglob("result.json")]
    assert len(trials) == 3
    seen = [t for t in trials if t.get("test_acc") is not None]
    assert len(seen) == 1 and seen[0]["val_acc"] == max(t["val_acc"] for t in trials)


CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  const images = [...document.images].map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0]);
  document.body.setAttribute('data-check', JSON.stringify(
    {images, tables: document.querySelectorAll('table').length, nested: document.querySelectorAll('li li').length}));
});
</script>"""


def _chromium():
    import os
    import shutil

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if os.environ.get("CI"):
            pytest.fail("CI run without chromium (.ci/run installs Debian's package)")
        pytest.skip("chromium is not installed (.ci/run installs it)")
    return found


def test_report_html_in_a_headless_browser(smoke):
    """Issue 9 item 12: every figure loads and every table renders in a real browser."""
    import html
    import re
    import subprocess

    out, _, _, _ = smoke
    browser = _chromium()
    rep = out / "report"
    md = (rep / "report.md").read_text()
    page = (rep / "report.html").read_text().replace("</body>", CHECK_SCRIPT + "</body>")
    (rep / "check.html").write_text(page)
    try:
        dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                              "--dump-dom", (rep / "check.html").as_uri()],
                             capture_output=True, text=True, timeout=120).stdout
    finally:
        (rep / "check.html").unlink()
    found = re.search(r'data-check="([^"]*)"', dom)
    assert found, dom[-2000:]
    check = json.loads(html.unescape(found.group(1)))
    wanted = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(src for src, _ in check["images"]) == sorted(wanted) and {"figure1.png", "curves.png"} <= set(wanted)
    assert all(ok for _, ok in check["images"]), check["images"]  # each image actually loaded
    assert check["tables"] == sum(line.startswith("|---") or line.startswith("| ---") for line in md.splitlines())
    assert check["nested"] > 0  # the findings' comparisons under each verdict


def test_a_run_recorded_before_an_option_existed_is_the_same_study():
    import json
    from dataclasses import asdict

    from shallowmimic.study.config import load_study
    from shallowmimic.study.run import _same_study

    cfg = load_study("quick", ["students.hard_repeats=0"])
    old = json.loads(json.dumps(asdict(cfg)))
    del old["students"]["hard_repeats"]  # written before the option existed: it ran at the default
    assert _same_study(old, cfg)
    assert not _same_study(old, load_study("quick", ["students.hard_repeats=1"]))
    assert _same_study(old, load_study("quick", ["students.hard_repeats=0", "inference.runs=200"]))
    old["students"]["widths"] = {}  # a recorded value is never replaced
    assert not _same_study(old, cfg)
    assert not _same_study(None, cfg) and not _same_study({"no_such_key": 1}, cfg)
