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
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import click
import torch

from .arch import with_tta
from .checkpoint import BEST, BEST_PENDING, CHECKPOINT, SIDECAR
from .config import config_hash, from_dict
from .cost import Plan, format_plan, plan_cost, shape_of, teacher_spec, train_flops, with_estimate
from .data import load_dataset
from .device import StageClock, machine_reference, precision, resolve_device, set_compile, set_precision
from .download import resolve_data_path
from .ensemble import MANIFEST as ENSEMBLE_MANIFEST
from .ensemble import Ensemble, build_ensemble, read_manifest
from .errors import UserError
from .inference import CSV_NAME as INFERENCE_CSV
from .inference import Export, measure_study
from .io import create_once, provenance, read_json, write_json
from .jobs import JobQueue, open_queue
from .layout import PLAN_JSON, RUN_JSON, STUDY_ID, WORKERS_ENV, queue_name
from .models import load_model
from .planning import (
    FAILED,
    INFERENCE_NOTES,
    SEARCH_JSON,
    Job,
    largest_first,
    overview,
    plan,
)
from .preprocess import make_split
from .report import build_report
from .results import TOP
from .search import make_storage, storage_url
from .status import flops_done
from .students import StudentSetting, add_test_accuracy, train_student
from .study import StudyConfig, deviations
from .teachers import split_tensors, teacher_config, train_teacher
from .train import Diverged, TrainConfig
from .transfer import TransferConfig, generate, shard_name
from .tuning import SearchConfig, study_summary, tune_students, tune_teachers


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


def run_study(cfg: StudyConfig, out: Path, data_path=None, progress: bool = True, echo=click.echo,
              retry_failed: bool = False, report: bool = True) -> dict:
    t_start = time.perf_counter()
    out = Path(out)
    ds = load_dataset(resolve_data_path(data_path))
    device = resolve_device(cfg.device)
    set_precision(cfg.precision)
    set_compile(cfg.compile)
    reference = machine_reference(device)
    data = split_tensors(ds, cfg.data, device)
    jobs = plan(cfg, out, data_identity(ds, cfg.data, data["fingerprint"]))
    if retry_failed:
        _forget_failures(jobs, out, echo)
    previous = _read_run(out)
    pending = any(not j.done() for js in jobs.values() for j in js)
    echo(f"study '{cfg.name}' in {out} on {device}, {precision(device)} ({ds.source}); "
         f"machine reference {reference:,.0f} GFLOP/s (fp32 matmul)\n{overview(jobs)}")
    costs = cost_of(cfg, out, jobs, ds, device, int(os.environ.get(WORKERS_ENV) or 1))
    echo(format_plan(costs))
    record = costs.to_dict(out)
    started = time.time()
    write_json(out / PLAN_JSON, {"config": asdict(cfg), "started": started, "plan": record,
                                 "flops_done_at_start": flops_done(out, record["jobs"], started)})

    # Every `run` on this directory is a worker; each job below is done by exactly one of them.
    queue = job_queue(cfg, out, echo)
    clock = StageClock(device)  # this invocation's stages, each with the machine's speed after it

    # 1. teachers
    teacher_dirs = _teachers_stage(cfg, jobs["teachers"], ds, out, device, data, progress, echo, queue)
    clock.lap("teachers")
    teacher_rows = [{**read_json(d / "result.json", "unfinished teacher"), "dir": str(d)} for d in teacher_dirs]

    # 2. ensemble
    ens_job = jobs["ensemble"][0]
    queue.share([ens_job], lambda job: build_ensemble(teacher_rows, cfg.ensemble.k, data, job.dir, device))
    manifest = read_manifest(ens_job.dir)
    echo(f"ensemble of {manifest['k']}: val {100 * manifest['val_acc']:.2f}%, test {100 * manifest['test_acc']:.2f}% "
         f"(best member: test {100 * manifest['best_member']['test_acc']:.2f}%)")
    clock.lap("ensemble")

    # 3. transfer set
    tr_job = jobs["transfer"][0]
    _transfer_stage(cfg, tr_job, ens_job.dir, manifest, data, device, progress, echo, queue)
    clock.lap("transfer set")

    # 4. students
    student_dirs = _students_stage(cfg, jobs["students"], ds, out, tr_job.dir, device, data, progress, echo, queue)
    clock.lap("students")

    # 5. inference cost
    inference = _inference_stage(cfg, [*teacher_dirs, ens_job.dir, *student_dirs], ds, out, progress, echo, queue)
    clock.lap("inference")

    # 6. report
    # Wall time of the study: summed over the invocations that did work for this config.
    same = _same_study(previous.get("config"), cfg)
    this = time.perf_counter() - t_start if pending or not same else 0.0
    wall = (previous.get("wall_s", 0.0) if same else 0.0) + this
    run = {"preset": cfg.name, "config": asdict(cfg), "data": ds.source, "device": str(device),
           "teachers": [str(d) for d in teacher_dirs], "students": [str(d) for d in student_dirs],
           "searches": [read_json(j.dir / SEARCH_JSON, "unfinished study") for js in jobs.values() for j in js
                        if j.stage == "search"],
           "ensemble": manifest, "ensemble_dir": str(ens_job.dir), "transfer": str(tr_job.dir), "wall_s": wall,
           "notes": _notes(cfg, jobs) + inference["notes"], "inference": inference["csv"],
           "deviations": deviations(cfg), "machine_reference_gflops": round(reference, 1),
           "precision": precision(device), "threads": torch.get_num_threads(),
           "jobs_per_worker": queue.jobs_per_worker(),
           "stages": clock.stages, "plan": costs.to_dict(out),
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


def data_identity(ds, split, fingerprint: str) -> dict:
    """What every job's key holds of the data: its content and the split, never its path (the
    path is recorded in run.json, as a record)."""
    return {"content": ds.digest, "n_train": len(ds.x_train), "split": asdict(split), "fingerprint": fingerprint}


def cost_of(cfg: StudyConfig, out: Path, jobs: dict[str, list[Job]], ds, device, workers: int,
            timed: bool = True) -> Plan:
    """The study's counted cost (cost.py), with a time estimate from a few seconds' calibration."""
    shape = shape_of(ds, cfg.data)
    costs = plan_cost(cfg, jobs, shape, out)
    if not timed:
        return costs
    # calibrated on the study's own models: a search on the middle of its space
    teachers = [teacher_spec(j.params if j.stage == "teacher" else {"variant": "paper"}, shape, cfg.teachers.variant)
                for j in jobs["teachers"]]
    students = [StudentSetting.from_params(j.params) if j.stage == "student" else
                StudentSetting(j.params["family"], j.params["budget"], j.params["loss"]) for j in jobs["students"]]
    student = max((s.model_spec(shape.size, shape.classes) for s in students), key=train_flops, default=None)
    return with_estimate(costs, teachers[0] if teachers else None, student, device, workers)


def dry_run(cfg: StudyConfig, out: Path, data_path=None, workers: int = 1, echo=click.echo,
            starting: bool = False) -> Plan:
    """`run --dry-run`: the resolved plan, its counted FLOPs and a time estimate; nothing is
    trained and nothing written (not even the study directory). `starting`: the same, printed
    by `run --workers N` before it starts them."""
    ds = load_dataset(resolve_data_path(data_path, download=False))  # a dry run downloads nothing
    device = resolve_device(cfg.device)
    set_precision(cfg.precision)
    split = make_split(len(ds.x_train), cfg.data.val_size, cfg.data.seed)
    jobs = plan(cfg, Path(out), data_identity(ds, cfg.data, split.fingerprint()))
    # the launcher itself keeps no GPU context: its workers print their own estimates
    costs = cost_of(cfg, Path(out), jobs, ds, device, workers, timed=not (starting and device.type == "cuda"))
    what = f"starting {workers} workers" if starting else "plan only: nothing is trained or written"
    echo(f"study '{cfg.name}' -> {out} on {device}, {precision(device)} ({ds.source}); {what}\n{format_plan(costs)}")
    return costs


def job_queue(cfg: StudyConfig, out: Path, echo=click.echo) -> JobQueue:
    """The study's job queue, in the searches' storage (search.storage, else RUN/studies.db)."""
    storage = make_storage(storage_url(cfg.search.storage or None, out), cfg.search.heartbeat)
    out.mkdir(parents=True, exist_ok=True)
    identity = create_once(out / STUDY_ID, uuid.uuid4().hex)
    return JobQueue(open_queue(storage, queue_name(identity)), out, log=echo)


def _search_config(cfg: StudyConfig, trials: int) -> SearchConfig:
    s = cfg.search
    return SearchConfig(trials, s.sampler, s.startup, s.seed, s.storage, s.heartbeat)


def _teachers_stage(cfg, jobs: list[Job], ds, out: Path, device, data, progress, echo, queue: JobQueue) -> list[Path]:
    """Train the fixed teachers, or run the teacher study; return the teachers' directories."""
    if jobs and jobs[0].stage == "search":
        job = jobs[0]
        if not job.done():
            echo(f"teacher search: {cfg.search.teacher_trials} trials ({cfg.search.sampler} sampler)")
            study = tune_teachers(ds, out, _search_config(cfg, cfg.search.teacher_trials), cfg.teachers.epochs,
                                  device, cfg.data, progress=progress, log=echo, name=job.dir.name, data=data)
            write_json(job.dir / SEARCH_JSON, {**study_summary(study), "role": "teacher"})
        summary = read_json(job.dir / SEARCH_JSON, "unfinished study")
        return [Path(t["dir"]) for t in summary["trials"] if t["state"] == "COMPLETE"]

    def train(job: Job) -> None:
        echo(f"{job.name}: training")
        smoothing = cfg.teachers.label_smoothing if cfg.teachers.label_smoothing >= 0 else None
        tcfg = teacher_config(cfg.teachers.variant, epochs=cfg.teachers.epochs, seed=job.params["seed"],
                              batch_size=cfg.teachers.batch_size or None, lr=cfg.teachers.lr or None,
                              schedule=cfg.teachers.schedule or None,
                              label_smoothing=smoothing)
        try:
            train_teacher(ds, job.dir, cfg.teachers.variant, job.params["spec"] or None, tcfg, device, cfg.data,
                          progress=progress, data=data)
        except Diverged as e:
            # Unlike a student, a teacher cannot be left out: the ensemble would silently change.
            # Nothing is marked failed, so a re-run (with changed settings) tries it again.
            raise UserError(f"{job.name} diverged, so the study stops here ({e}); change teachers.lr "
                            "or teachers.variant and run again") from e

    queue.share(jobs, train)
    return [j.dir for j in jobs]


@dataclass(frozen=True)
class Shard:
    """One stored epoch of the transfer set, a job of its own: workers label epochs in parallel."""

    dir: Path  # the shard's file, which names the job
    epoch: int

    def done(self) -> bool:
        return self.dir.exists()


def _transfer_stage(cfg, job: Job, ens_dir: Path, manifest: dict, data, device, progress, echo,
                    queue: JobQueue) -> None:
    """Label every stored epoch (each by one worker), then write the manifest of shard digests."""
    tcfg = TransferConfig(epochs=cfg.transfer.epochs, seed=cfg.transfer.seed, materialize=cfg.transfer.materialize,
                          images=cfg.transfer.images)
    source = {"ensemble": str(ens_dir), "split_fingerprint": data["fingerprint"], "tta": cfg.transfer.tta}
    loaded: list[Ensemble] = []

    def ensemble() -> Ensemble:  # loaded once per worker, and only by a worker that labels
        if not loaded:
            members = [load_model(Path(m["dir"]), device)[0] for m in manifest["members"]]
            if cfg.transfer.tta != "model":
                members = [with_tta(m, cfg.transfer.tta) for m in members]
            loaded.append(Ensemble(members).eval())
        return loaded[0]

    shards = [] if job.done() else [Shard(job.dir / shard_name(e), e) for e in range(tcfg.epochs)]
    queue.share(shards, lambda shard: generate(ensemble(), data["x_train"], tcfg, job.dir, source,
                                               progress=progress, only=[shard.epoch]))

    def write_manifest(_: Job) -> None:  # every shard is there: checked, digested, listed
        # the ensemble is loaded only if a shard must be made again (one was deleted meanwhile)
        info = generate(lambda x: ensemble()(x), data["x_train"], tcfg, job.dir, source, progress=progress)
        echo(f"transfer set: {info['epochs']} epochs x {info['images_per_epoch']:,} images, "
             f"{info['bytes'] / 2**20:.1f} MiB stored vs {info['materialized_bytes'] / 2**20:.1f} MiB as images")

    queue.share([job], write_manifest)


def _students_stage(cfg, jobs: list[Job], ds, out: Path, transfer_dir: Path, device, data, progress,
                    echo, queue: JobQueue) -> list[Path]:
    """Train the fixed students, or run one study per setting; return the students' directories."""
    def search(job: Job, wait: bool):
        p = job.params
        return tune_students(ds, out, _search_config(cfg, p["trials"]), transfer_dir, p["family"], p["budget"],
                             p["loss"], TrainConfig(**p["train"]), device, cfg.data, progress=progress, log=echo,
                             name=job.dir.name, data=data, wait=wait)

    # First every study's free trials, so that no worker idles at the end of one study while
    # others run its last trials; then each study's end (taking over trials of dead workers).
    pending = [j for j in jobs if j.stage == "search" and not j.done()]
    for job in pending:
        echo(f"student study {jobs.index(job) + 1}/{len(jobs)}: {job.name} ({job.params['trials']} trials)")
        search(job, wait=False)
    for job in pending:
        if job.done():  # summarized by another worker meanwhile
            continue
        p = job.params
        summary = {**study_summary(search(job, wait=True)), "role": "student", "family": p["family"],
                   "budget": p["budget"], "loss": p["loss"]}
        # the report averages each setting's best 5 by validation: only those see the test set
        for t in sorted((t for t in summary["trials"] if t["state"] == "COMPLETE"),
                        key=lambda t: (t["value"], t["number"]))[:TOP]:
            add_test_accuracy(Path(t["dir"]), data)
        write_json(job.dir / SEARCH_JSON, summary)
    dirs: list[Path] = []
    for job in jobs:
        if job.stage == "search":
            summary = read_json(job.dir / SEARCH_JSON, "unfinished study")
            dirs += [Path(t["dir"]) for t in summary["trials"] if t["state"] == "COMPLETE"]
        else:
            dirs.append(job.dir)
    fixed = largest_first([j for j in jobs if j.stage != "search"], ds.image_size, ds.num_classes)

    def train(job: Job) -> None:
        echo(f"student {jobs.index(job) + 1}/{len(jobs)}: {job.name}")
        try:
            train_student(ds, transfer_dir, StudentSetting.from_params(job.params), TrainConfig(**job.params["train"]),
                          job.dir, device, cfg.data, progress=progress, data=data)
        except Diverged as e:  # one bad student must not sink the study; the report lists it
            write_json(job.dir / FAILED, {"job": job.name, "reason": str(e)})
            echo(f"  failed: {e}")

    queue.share(fixed, train)
    return dirs


def _inference_stage(cfg, dirs: list[Path], ds, out: Path, progress, echo, queue: JobQueue) -> dict:
    """inference.csv for every finished model and the ensemble; skipped (with a note in the
    report) when switched off or when onnxruntime is missing."""
    if not cfg.inference.enabled:
        return {"csv": None, "notes": ["Inference cost not measured (inference.enabled = false)."]}
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return {"csv": None, "notes": ["Inference cost not measured: onnx / onnxruntime are not installed "
                                       "(pip install onnx onnxruntime)."]}
    path = out / INFERENCE_CSV
    models = reported_models(dirs)

    # The timing is one job, so that no worker times models while another works beside it; its
    # notes are kept for the workers that waited for it. Before it, every export and its check,
    # each a job of its own (any worker takes it).
    job = Job("inference", "inference cost", out / "inference" / config_hash(
        {"models": [str(d) for d in models], "runs": cfg.inference.runs, "batch": cfg.inference.batch}), {})

    def export(e: Export) -> None:
        error = e.run(ds.x_test, ds.y_test)
        if error:
            echo(f"  export failed: {error}")

    queue.share([] if job.done() else [Export(d) for d in models], export)

    def measure(job: Job) -> None:
        failed = {d: Export(d).failure() for d in models}
        notes = [f"Inference cost not measured for {d}: {e}" for d, e in failed.items() if e]
        rows = measure_study([d for d in models if not failed[d]], ds.x_test, ds.y_test, path, progress=progress,
                             runs=cfg.inference.runs, batch=cfg.inference.batch, reuse_export=True,
                             on_error=lambda d, e: notes.append(f"Inference cost not measured for {d}: {e}"))
        echo(f"inference cost: {len(rows)} models exported to ONNX, checked by onnxruntime and timed -> {path}")
        write_json(job.dir / INFERENCE_NOTES, {"csv": str(path), "notes": notes})

    queue.share([job], measure)
    return read_json(job.dir / INFERENCE_NOTES, "unfinished inference stage")


def reported_models(dirs: list[Path]) -> list[Path]:
    """The finished models the report shows: the ensemble, and models evaluated on test (in a
    search, only each setting's best by validation see the test set, so only those are timed)."""
    keep = []
    for d in map(Path, dirs):
        if (d / ENSEMBLE_MANIFEST).exists():
            keep.append(d)
        elif (d / "result.json").exists() and read_json(d / "result.json", "unfinished").get("test_acc") is not None:
            keep.append(d)
    return keep


def _forget_failures(jobs: dict[str, list[Job]], out: Path, echo) -> None:
    """`run --retry-failed`: a failed student (or a failed export) is otherwise done for good,
    since the same seed and settings fail the same way on CPU; after a code or machine change it
    may not."""
    for job in (j for js in jobs.values() for j in js):
        marker = job.dir / FAILED
        if marker.exists():
            for name in (FAILED, CHECKPOINT, SIDECAR, BEST, BEST_PENDING):
                (job.dir / name).unlink(missing_ok=True)
            echo(f"retrying failed job {job.name}")
        for marker in job.dir.glob("*.onnx.failed.json") if job.dir.is_dir() else []:  # a failed export
            marker.unlink()
            echo(f"retrying the failed export of {job.name}")
            for notes in Path(out).glob(f"inference/*/{INFERENCE_NOTES}"):  # and the timing after it
                notes.unlink()


def measure_inference(out: Path, data_path=None, runs: int = 100, batch: int = 256) -> list[dict]:
    """`bench infer`: the inference stage on a finished study, then its report again."""
    run = _read_run(out)
    if not run:
        raise UserError(f"{out}: not a study directory (no {RUN_JSON}); run `shallowmimic run` first")
    ens = [run["ensemble_dir"]] if run.get("ensemble_dir") else \
        [str(p.parent) for p in sorted((Path(out) / "ensemble").glob(f"*/{ENSEMBLE_MANIFEST}"))][:1]  # older runs
    dirs = reported_models([Path(d) for d in (*run["teachers"], *ens, *run["students"])])
    ds = load_dataset(resolve_data_path(data_path))
    rows = measure_study(dirs, ds.x_test, ds.y_test, Path(out) / INFERENCE_CSV, runs=runs, batch=batch)
    write_json(Path(out) / RUN_JSON, {**run, "inference": str(Path(out) / INFERENCE_CSV)})
    report_only(out)
    return rows


def report_only(out: Path) -> dict:
    run = _read_run(out)
    if not run:
        raise UserError(f"{out}: not a study directory (no {RUN_JSON}); run `shallowmimic run` first")
    return build_report(Path(out) / "report", run)


def _notes(cfg: StudyConfig, jobs: dict[str, list[Job]]) -> list[str]:
    s = cfg.search
    notes = []
    if not s.teacher_trials:
        notes.append("No teacher search in this run: teachers use fixed settings (search.teacher_trials = 0).")
    if not s.student_trials:
        notes.append("No student search in this run: students use fixed settings (search.student_trials = 0).")
    if cfg.data.train_limit or cfg.data.val_limit:
        notes.append(f"Reduced data: {cfg.data.train_limit or 'all'} training and {cfg.data.val_limit or 'all'} "
                     "validation images; the test set is complete.")
    for job in jobs["students"]:
        if (job.dir / FAILED).exists():
            notes.append(f"Failed: {json.loads((job.dir / FAILED).read_text())['reason']}")
    return notes


def _result(job: Job) -> dict:
    return read_json(job.dir / "result.json", "unfinished job")


def _read_run(out: Path) -> dict:
    path = Path(out) / RUN_JSON
    return json.loads(path.read_text()) if path.exists() else {}


