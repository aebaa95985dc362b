"""The study, end to end, as the paper's method section reads:

1. Train teachers (deep CNNs) on the 40k training split with online augmentation.
2. Pick the K best by validation accuracy; the ensemble averages their logits.
3. Generate the transfer set: N epochs of augmented training images (student constants),
   labelled with the ensemble's logits.
4. Train students of every family at every budget to mimic those logits (L2), and the same
   architectures on hard labels, on the same images in the same order.
5. Measure what each model costs to run (ONNX export, latency, throughput).
6. Report: tables beside the paper's, the qualitative findings, Figure 1, and accuracy
   against inference cost (Figure 2).

Each stage's outputs live in a directory keyed by a hash of everything they depend on, so a
re-run skips finished work, resumes unfinished work, and recomputes only what a changed
setting affects.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch

from shallowmimic.core.config import from_dict
from shallowmimic.core.device import (
    StageClock,
    machine_reference,
    own_context,
    precision,
    resolve_device,
    set_compile,
    set_precision,
)
from shallowmimic.core.errors import UserError
from shallowmimic.core.files import create_once, provenance, read_json, write_json
from shallowmimic.core.layout import PLAN_JSON, RUN_JSON, STUDY_ID, WORKERS_ENV, queue_name
from shallowmimic.data.download import resolve_data_path
from shallowmimic.data.sources import load_dataset
from shallowmimic.data.split import make_split, split_tensors
from shallowmimic.deploy.inference import CSV_NAME as INFERENCE_CSV
from shallowmimic.deploy.inference import measure_study
from shallowmimic.distill.ensemble import MANIFEST as ENSEMBLE_MANIFEST
from shallowmimic.distill.ensemble import build_ensemble, read_manifest
from shallowmimic.distill.students import StudentSetting
from shallowmimic.models.result import ModelResult
from shallowmimic.report.build import build_report
from shallowmimic.search.jobs import JobQueue, open_queue
from shallowmimic.search.storage import make_storage, storage_url
from shallowmimic.study.config import StudyConfig, deviations
from shallowmimic.study.cost import Plan, format_plan, plan_cost, shape_of, teacher_spec, train_flops, with_estimate
from shallowmimic.study.planning import (
    SEARCH_JSON,
    Job,
    overview,
    plan,
)
from shallowmimic.study.stages import (
    StudyContext,
    forget_failures,
    inference_stage,
    reported_models,
    say,
    students_stage,
    study_notes,
    teachers_stage,
    transfer_stage,
)
from shallowmimic.study.status import flops_done

Echo = Callable[[str], None]  # where a run's messages go: `say`, click.echo, a logger's info


def _same_study(recorded: dict | None, cfg: StudyConfig) -> bool:
    """Whether a run.json's config is this study, the inference stage's settings aside. Keys
    added since it was recorded take their defaults, as they did when it ran."""
    if not isinstance(recorded, dict):
        return False
    try:
        previous = from_dict(StudyConfig, recorded)
    except UserError:  # written with options that no longer exist
        return False
    return replace(previous, inference=cfg.inference) == cfg


@own_context
def run_study(cfg: StudyConfig, out: Path, data_path=None, progress: bool = True, echo: Echo = say,
              retry_failed: bool = False, report: bool = True) -> dict:
    """Run (or resume, or join as one more worker) the study `cfg` in `out`; returns what the
    report wrote (its findings), or {} where another worker writes the report."""
    t_start = time.perf_counter()
    out = Path(out)
    ds = load_dataset(resolve_data_path(data_path), cfg.images.size)
    device = resolve_device(cfg.device)
    set_precision(cfg.precision)
    set_compile(cfg.compile)
    reference = machine_reference(device)
    data = split_tensors(ds, cfg.data, device)
    jobs = plan(cfg, out, data_identity(ds, cfg.data, data.fingerprint))
    if retry_failed:
        forget_failures(jobs, out, echo)
    previous = _read_run(out)
    pending = any(not j.done() for js in jobs.values() for j in js)
    echo(f"study '{cfg.name}' in {out} on {device}, {precision(device)} ({ds.source}); "
         f"machine reference {reference:,.0f} GFLOP/s (fp32 matmul)\n{overview(jobs)}")
    costs = cost_of(cfg, out, jobs, ds, device, int(os.environ.get(WORKERS_ENV) or 1))
    echo(format_plan(costs))
    _write_plan(cfg, out, costs)

    # Every `run` on this directory is a worker; each job below is done by exactly one of them.
    ctx = StudyContext(cfg, out, ds, device, data, job_queue(cfg, out, echo), progress, echo)
    clock = StageClock(device)  # this invocation's stages, each with the machine's speed after it
    done = _stages(ctx, jobs, clock)
    inference_notes = done.pop("inference_notes")

    # Wall time of the study: summed over the invocations that did work for this config.
    same = _same_study(previous.get("config"), cfg)
    this = time.perf_counter() - t_start if pending or not same else 0.0
    wall = (previous.get("wall_s", 0.0) if same else 0.0) + this
    run = {"preset": cfg.name, "config": asdict(cfg), "data": ds.source, "device": str(device), **done,
           "searches": [read_json(j.dir / SEARCH_JSON, "unfinished study") for js in jobs.values() for j in js
                        if j.stage == "search"],
           "wall_s": wall, "notes": study_notes(cfg, jobs) + inference_notes,
           "deviations": deviations(cfg), "machine_reference_gflops": round(reference, 1),
           "precision": precision(device), "threads": torch.get_num_threads(),
           "jobs_per_worker": ctx.queue.jobs_per_worker(), "stages": clock.stages, "plan": costs.to_dict(out),
           "provenance": provenance()}
    write_json(out / RUN_JSON, run)
    stages = f"  stages of this invocation, minutes (GFLOP/s after each): {clock.line()}"
    if not report:  # another worker writes it: the same report, from the same finished jobs
        echo(f"done (wall time {wall / 60:.1f} min); the report is left to another worker\n{stages}")
        return {}
    written = build_report(out / "report", run)
    echo(f"report: {out / 'report' / 'report.md'}  (wall time {wall / 60:.1f} min)\n{stages}")
    for f in written["findings"]:
        echo("  " + f.line())
    return written


def _write_plan(cfg: StudyConfig, out: Path, costs: Plan) -> None:
    """plan.json: the plan and its counted cost as this invocation starts (what `status` reads)."""
    record = costs.to_dict(out)
    started = time.time()
    write_json(out / PLAN_JSON, {"config": asdict(cfg), "started": started, "plan": record,
                                 "flops_done_at_start": flops_done(out, record["jobs"], started)})


def _stages(ctx: StudyContext, jobs: dict[str, list[Job]], clock: StageClock) -> dict:
    """The paper's stages in order, each lapped on `clock`; what run.json records of them."""
    teacher_dirs = teachers_stage(ctx, jobs["teachers"])
    clock.lap("teachers")
    teacher_rows = [{**ModelResult.load(d).to_dict(), "dir": str(d)} for d in teacher_dirs]

    ens_job = jobs["ensemble"][0]
    ctx.queue.share([ens_job], lambda job: build_ensemble(teacher_rows, ctx.cfg.ensemble.k, ctx.data, job.dir,
                                                          ctx.device))
    manifest = read_manifest(ens_job.dir)
    best = manifest["best_member"]["test_acc"]
    ctx.echo(f"ensemble of {manifest['k']}: val {100 * manifest['val_acc']:.2f}%, "
             f"test {100 * manifest['test_acc']:.2f}% (best member: test {100 * best:.2f}%)")
    clock.lap("ensemble")

    tr_job = jobs["transfer"][0]
    transfer_stage(ctx, tr_job, ens_job.dir, manifest)
    clock.lap("transfer set")

    student_dirs = students_stage(ctx, jobs["students"], tr_job.dir)
    clock.lap("students")

    inference = inference_stage(ctx, [*teacher_dirs, ens_job.dir, *student_dirs])
    clock.lap("inference")
    return {"teachers": [str(d) for d in teacher_dirs], "students": [str(d) for d in student_dirs],
            "ensemble": manifest, "ensemble_dir": str(ens_job.dir), "transfer": str(tr_job.dir),
            "inference": inference["csv"], "inference_notes": inference["notes"]}


def data_identity(ds, split, fingerprint: str) -> dict:
    """What every job's key holds of the data: its content and the split, never its path (the
    path is recorded in run.json, as a record)."""
    return {"content": ds.digest, "n_train": len(ds.x_train), "split": asdict(split), "fingerprint": fingerprint}


def cost_of(cfg: StudyConfig, out: Path, jobs: dict[str, list[Job]], ds, device, workers: int,
            timed: bool = True) -> Plan:
    """The study's counted cost (study/cost.py), with a time estimate from a few seconds' calibration."""
    shape = shape_of(ds, cfg.data)
    costs = plan_cost(cfg, jobs, shape, out)
    if not timed:
        return costs
    # calibrated on the study's own models: a search on the middle of its space
    teachers = [teacher_spec(j.params if j.stage == "teacher" else {"variant": "paper"}, shape, cfg.teachers.variant)
                for j in jobs["teachers"] if j.stage != "external"]
    students = [StudentSetting.from_params(j.params) if j.stage == "student" else
                StudentSetting(j.params["family"], j.params["budget"], j.params["loss"]) for j in jobs["students"]]
    student = max((s.model_spec(shape.size, shape.classes) for s in students), key=train_flops, default=None)
    return with_estimate(costs, teachers[0] if teachers else None, student, device, workers)


@own_context
def dry_run(cfg: StudyConfig, out: Path, data_path=None, workers: int = 1, echo: Echo = say,
            starting: bool = False) -> Plan:
    """`run --dry-run`: the resolved plan, its counted FLOPs and a time estimate; nothing is
    trained and nothing written (not even the study directory). `starting`: the same, printed
    by `run --workers N` before it starts them."""
    # a dry run downloads nothing
    ds = load_dataset(resolve_data_path(data_path, download=False), cfg.images.size)
    device = resolve_device(cfg.device)
    set_precision(cfg.precision)
    split = make_split(len(ds.x_train), cfg.data.val_size, cfg.data.seed)
    jobs = plan(cfg, Path(out), data_identity(ds, cfg.data, split.fingerprint()))
    # the launcher itself keeps no GPU context: its workers print their own estimates
    costs = cost_of(cfg, Path(out), jobs, ds, device, workers, timed=not (starting and device.type == "cuda"))
    what = f"starting {workers} workers" if starting else "plan only: nothing is trained or written"
    echo(f"study '{cfg.name}' -> {out} on {device}, {precision(device)} ({ds.source}); {what}\n{format_plan(costs)}")
    return costs


def job_queue(cfg: StudyConfig, out: Path, echo: Echo = say) -> JobQueue:
    """The study's job queue, in the searches' storage (search.storage, else RUN/studies.db)."""
    storage = make_storage(storage_url(cfg.search.storage or None, out), cfg.search.heartbeat)
    out.mkdir(parents=True, exist_ok=True)
    identity = create_once(out / STUDY_ID, uuid.uuid4().hex)
    return JobQueue(open_queue(storage, queue_name(identity)), storage, log=echo)


def measure_inference(out: Path, data_path=None, runs: int = 100, batch: int = 256) -> list[dict]:
    """`bench infer`: the inference stage on a finished study, then its report again."""
    run = _read_run(out)
    if not run:
        raise UserError(f"{out}: not a study directory (no {RUN_JSON}); run `shallowmimic run` first")
    ens = [run["ensemble_dir"]] if run.get("ensemble_dir") else \
        [str(p.parent) for p in sorted((Path(out) / "ensemble").glob(f"*/{ENSEMBLE_MANIFEST}"))][:1]  # older runs
    dirs = reported_models([Path(d) for d in (*run["teachers"], *ens, *run["students"])])
    ds = load_dataset(resolve_data_path(data_path), run.get("config", {}).get("images", {}).get("size", 32))
    rows = measure_study(dirs, ds.x_test, ds.y_test, Path(out) / INFERENCE_CSV, runs=runs, batch=batch)
    write_json(Path(out) / RUN_JSON, {**run, "inference": str(Path(out) / INFERENCE_CSV)})
    report_only(out)
    return rows


def report_only(out: Path) -> dict:
    run = _read_run(out)
    if not run:
        raise UserError(f"{out}: not a study directory (no {RUN_JSON}); run `shallowmimic run` first")
    return build_report(Path(out) / "report", run)


def _read_run(out: Path) -> dict:
    path = Path(out) / RUN_JSON
    return json.loads(path.read_text()) if path.exists() else {}


