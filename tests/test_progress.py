"""Issue 20: the cost before it is spent (`run --dry-run`, counted FLOPs per job, a time
estimate, the plan recorded in run.json and the report) and a run that shows where it is
(`status DIR` from another shell, the live view of `run --workers N`)."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .test_workers import SETS, assert_each_job_done_once, data  # noqa: F401 (the module's data fixture)


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "shallowmimic", *args], capture_output=True, text=True,
                          timeout=timeout, env={**__import__("os").environ, "SHALLOWMIMIC_THREADS": "1"})


def smoke_args(data_path, out, *extra):
    return ["run", "--preset", "smoke", "--out", str(out), "--data", str(data_path), "--device", "cpu", "--no-progress",
            *(a for s in SETS for a in ("--set", s)), *extra]


def test_dry_run_writes_nothing_and_its_total_is_the_sum_of_its_jobs(data, tmp_path):  # noqa: F811
    from shallowmimic.models.flops import train_flops_per_image
    from shallowmimic.study.config import load_study
    from shallowmimic.study.run import dry_run

    out = tmp_path / "study"
    r = cli(*smoke_args(data, out, "--dry-run"))
    assert r.returncode == 0, r.stderr
    assert not out.exists()  # no weights, no directory, no database
    assert "plan only" in r.stdout and "estimated time:" in r.stdout and "an estimate" in r.stdout.lower()

    cfg = load_study("smoke", SETS + ['device="cpu"'])
    lines = []
    plan = dry_run(cfg, out, data, workers=2, echo=lines.append)
    assert not out.exists()
    assert plan.total == pytest.approx(sum(j.train + j.label + j.evaluate for j in plan.jobs))
    assert plan.total == pytest.approx(sum(plan.stage_total(s) for s in plan.stages()))
    record = plan.to_dict(out)
    assert record["total_flops"] == pytest.approx(sum(j["total"] for j in record["jobs"]))
    stages = [j.stage for j in plan.jobs]
    assert stages.count("teachers") == 2 and stages.count("transfer set") == 3 and stages.count("students") == 6
    assert len(plan.jobs) == 22  # every job of the queue (test_workers.N_JOBS)
    # one job checked by hand: a teacher's training is FLOPs per image x training images x epochs
    from shallowmimic.study.cost import Shape, teacher_spec

    spec = teacher_spec({"spec": cfg.teachers.specs[0]}, Shape(500, 200, 100, 32, 3, 10), "fast")
    per_image = train_flops_per_image(spec.build(), 3, 32)
    teacher = next(j for j in plan.jobs if j.stage == "teachers")
    assert teacher.train == pytest.approx(per_image * 500 * cfg.teachers.epochs)  # 700 images - 200 validation
    assert plan.estimate["total_s"] > 0 and plan.estimate["workers"] == 2
    assert f"{plan.total / 1e12:,.2f}" in [line for line in lines[0].splitlines() if line.startswith("total")][0]


def test_a_run_records_its_plan_and_the_report_its_compute(data, tmp_path):  # noqa: F811
    out = tmp_path / "study"
    r = cli(*smoke_args(data, out))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "estimated time:" in r.stdout  # the plan, printed as the run starts
    run = json.loads((out / "run.json").read_text())
    assert run["plan"]["total_flops"] > 0 and set(run["plan"]["stages"]) >= {"teachers", "students"}
    assert all(not Path(m).is_absolute() for j in run["plan"]["jobs"] for m in j["markers"])
    report = (out / "report" / "report.md").read_text()
    assert "## Compute" in report and "counted TFLOP" in report
    s = cli("status", str(out))
    assert s.returncode == 0 and "finished" in s.stdout, s.stdout + s.stderr


def test_status_follows_a_two_worker_study_without_joining_it(data, tmp_path):  # noqa: F811
    out = tmp_path / "study"
    args = smoke_args(data, out, "--workers", "2")
    args.remove("--no-progress")
    proc = subprocess.Popen([sys.executable, "-m", "shallowmimic", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen_running = []
    try:
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:
            if (out / "plan.json").exists():
                s = cli("status", str(out), timeout=60)
                assert s.returncode == 0, s.stderr
                if "worker " in s.stdout and "finished" not in s.stdout.splitlines()[0]:
                    seen_running.append(s.stdout)
            time.sleep(0.5)
        output = proc.communicate(timeout=600)[0]
    finally:
        proc.kill()
    assert proc.returncode == 0, output[-3000:]
    assert seen_running, "status never showed a running worker"
    assert "ETA" in seen_running[0] and "jobs," in seen_running[0]
    workers = assert_each_job_done_once(out)  # status took no job: only the two workers did
    assert len(workers) == 2
    final = cli("status", str(out))
    assert final.returncode == 0
    head, *stages = final.stdout.splitlines()
    assert "finished" in head and "report:" in head
    counts = [line.split()[-1] if "/" in line.split()[-1] else next(w for w in line.split() if "/" in w)
              for line in stages if not line.strip().startswith("worker")]
    assert counts and all(a == b for a, b in (c.split("/") for c in counts)), final.stdout
    assert "jobs," in output  # the launcher's live view (not a terminal: printed as jobs finish)


def test_status_of_a_directory_without_a_study_is_one_line(tmp_path):
    r = cli("status", str(tmp_path))
    assert r.returncode == 1 and r.stderr.startswith("Error:") and len(r.stderr.strip().splitlines()) == 1


def test_the_quick_preset_is_counted_and_pinned():
    """Issue 20: the quick study's counted compute (training, labelling, evaluation), pinned so
    that a change to the preset that spends more shows here first: at most the issue's 250
    TFLOP (247.3 today; 592.7 before the cut)."""
    from shallowmimic.study.config import load_study
    from shallowmimic.study.cost import Shape, plan_cost
    from shallowmimic.study.planning import plan

    cfg = load_study("quick")
    costs = plan_cost(cfg, plan(cfg, Path("runs/x"), {"d": 1}), Shape(40000, 5000, 10000, 32, 3, 10))
    assert 245e12 < costs.total <= 250e12
    assert costs.stage_total("teachers") == pytest.approx(119.9e12, rel=1e-3)


def test_status_reads_a_search_stage_from_its_own_study(tmp_path):
    """A search job's progress is its finished trials of its count; its running trials are shown
    with where their training is. The storage is only read: no table or row is added."""
    import optuna
    from optuna.trial import TrialState

    from shallowmimic.core.layout import DEFAULT_DB, PLAN_JSON
    from shallowmimic.study.status import study_status

    out = tmp_path / "study"
    (out / "trials" / "teachers-abc").mkdir(parents=True)
    url = f"sqlite:///{out / DEFAULT_DB}"
    study = optuna.create_study(study_name="teachers-abc", storage=url)
    for _ in range(2):
        study.tell(study.ask(), 0.5)
    trial = study.ask()
    run_dir = tmp_path / "trial-dir"
    run_dir.mkdir()
    (run_dir / "progress.json").write_text(json.dumps({"epoch": 2, "epochs": 5, "step": 3, "steps": 10}))
    trial.set_user_attr("dir", str(run_dir))
    trial.set_user_attr("worker", "host/pidns1:42")
    job = {"stage": "teachers", "name": "teacher study (4 trials)", "train": 4e12, "label": 0.0, "evaluate": 0.0,
           "total": 4e12, "note": "", "done": False, "trials": 4, "epochs": 0,
           "markers": ["trials/teachers-abc/search.json", "trials/teachers-abc/failed.json"]}
    (out / PLAN_JSON).write_text(json.dumps({"config": {"name": "s"}, "started": time.time() - 60,
                                             "plan": {"total_flops": 4e12, "jobs": [job]}}))
    before = (out / DEFAULT_DB).stat().st_mtime_ns
    status = study_status(out)
    assert status.flops_done == pytest.approx(2e12)  # 2 of 4 trials
    assert status.stages == {"teachers": (0, 1)}
    assert [r.worker for r in status.running] == ["host:42"]
    assert "trial 2" in status.running[0].job and "epoch 2/5, step 3/10" in status.running[0].job
    assert (out / DEFAULT_DB).stat().st_mtime_ns == before
    assert [t.state for t in study.get_trials()].count(TrialState.RUNNING) == 1
