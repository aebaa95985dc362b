"""The stages of a study, each handing its jobs to the job queue so that every job is done by
exactly one worker: teachers (or the teacher search), the transfer set (one job per stored epoch,
then its manifest), students (or one search per setting) and the inference cost (one export job
per model, then one timing job)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from shallowmimic.core.config import config_hash
from shallowmimic.core.errors import UserError
from shallowmimic.core.files import read_json, write_json
from shallowmimic.core.layout import INFERENCE_NOTES, SEARCH_JSON, within
from shallowmimic.data.sources import Dataset
from shallowmimic.data.split import SplitData
from shallowmimic.deploy.inference import CSV_NAME as INFERENCE_CSV
from shallowmimic.deploy.inference import Export, measure_study
from shallowmimic.distill.ensemble import MANIFEST as ENSEMBLE_MANIFEST
from shallowmimic.distill.ensemble import is_external, load_ensemble
from shallowmimic.distill.students import StudentSetting, add_test_accuracy, train_student
from shallowmimic.distill.transfer import generate, shard_name
from shallowmimic.models.checkpoint import BEST, BEST_PENDING, CHECKPOINT, SIDECAR
from shallowmimic.models.external import ExternalTeacher
from shallowmimic.models.result import ModelResult
from shallowmimic.models.store import MODEL_JSON
from shallowmimic.report.results import TOP
from shallowmimic.search.jobs import JobQueue
from shallowmimic.study.config import StudyConfig
from shallowmimic.study.planning import FAILED, Job, largest_first
from shallowmimic.study.tuning import SearchConfig, study_summary, tune_students, tune_teachers
from shallowmimic.training.external import evaluate_external, verify_external
from shallowmimic.training.loop import Diverged, TrainConfig
from shallowmimic.training.teachers import teacher_config, train_teacher


def say(text: str) -> None:
    """A run's messages by default: printed and flushed at once, so that a worker's log is whole
    up to its last line when the launcher stops it or reads why it failed."""
    print(text, flush=True)


@dataclass(frozen=True)
class StudyContext:
    """What every stage of one invocation works from: the study, its data on the device, the
    job queue it shares with the other workers, and where its messages go."""

    cfg: StudyConfig
    out: Path
    ds: Dataset
    device: torch.device
    data: SplitData  # the split's tensors on the device
    queue: JobQueue
    progress: bool = True
    echo: Callable[[str], None] = say


def _search_config(cfg: StudyConfig, trials: int) -> SearchConfig:
    s = cfg.search
    return SearchConfig(trials=trials, **s.settings())


def teachers_stage(ctx: StudyContext, jobs: list[Job]) -> list[Path]:
    """Train the fixed teachers (or run the teacher study) and evaluate the external ones;
    return the teachers' directories."""
    external = [j for j in jobs if j.stage == "external"]
    ctx.queue.share([j for j in external if not _verified(j)], lambda job: _evaluate_external(ctx, job))
    jobs = [j for j in jobs if j.stage != "external"]
    if jobs and jobs[0].stage == "search":
        return _teacher_search(ctx, jobs[0]) + [j.dir for j in external]

    def train(job: Job) -> None:
        ctx.echo(f"{job.name}: training")
        smoothing = ctx.cfg.teachers.label_smoothing if ctx.cfg.teachers.label_smoothing >= 0 else None
        tcfg = teacher_config(ctx.cfg.teachers.variant, epochs=ctx.cfg.teachers.epochs, seed=job.params["seed"],
                              batch_size=ctx.cfg.teachers.batch_size or None, lr=ctx.cfg.teachers.lr or None,
                              schedule=ctx.cfg.teachers.schedule or None,
                              label_smoothing=smoothing)
        try:
            train_teacher(ctx.ds, job.dir, ctx.cfg.teachers.variant, job.params["spec"] or None, tcfg, ctx.device,
                          ctx.cfg.data,
                          progress=ctx.progress, data=ctx.data)
        except Diverged as e:
            # Unlike a student, a teacher cannot be left out: the ensemble would silently change.
            # Nothing is marked failed, so a re-run (with changed settings) tries it again.
            raise UserError(f"{job.name} diverged, so the study stops here ({e}); change teachers.lr "
                            "or teachers.variant and run again") from e

    ctx.queue.share(jobs, train)
    return [j.dir for j in jobs + external]


def _teacher_search(ctx: StudyContext, job: Job) -> list[Path]:
    if not job.done():
        ctx.echo(f"teacher search: {ctx.cfg.search.teacher_trials} trials ({ctx.cfg.search.sampler} sampler)")
        study = tune_teachers(ctx.ds, ctx.out, _search_config(ctx.cfg, ctx.cfg.search.teacher_trials),
                              ctx.cfg.teachers.epochs, ctx.device, ctx.cfg.data, progress=ctx.progress,
                              log=ctx.echo, name=job.dir.name, data=ctx.data)
        write_json(job.dir / SEARCH_JSON, {**study_summary(study), "role": "teacher"})
    summary = read_json(job.dir / SEARCH_JSON, "unfinished study")
    return [Path(t["dir"]) for t in summary["trials"] if t["state"] == "COMPLETE"]


def _verified(job: Job) -> bool:
    """Whether an external teacher's job is done, its file(s) the ones it recorded (else a
    one-line error: the ensemble would change under the study)."""
    if job.done():
        verify_external(ExternalTeacher(**job.params["entry"]), job.dir)
    return job.done()


def _evaluate_external(ctx: StudyContext, job: Job) -> None:
    entry = ExternalTeacher(**job.params["entry"])
    ctx.echo(f"{job.name}: evaluating {entry.name}")
    r = evaluate_external(entry, ctx.data, job.dir, ctx.ds.num_classes, ctx.device, ctx.cfg.data, ctx.ds.source)
    ctx.echo(f"  {r.params:,} parameters, val {100 * r.val_acc:.2f}%, test {100 * r.test_acc:.2f}%")


@dataclass(frozen=True)
class Shard:
    """One stored epoch of the transfer set, a job of its own: workers label epochs in parallel."""

    key: str  # the shard file's path inside the study
    path: Path
    epoch: int

    def done(self) -> bool:
        return self.path.exists()


@dataclass(frozen=True)
class ExportJob:
    """One model's export and check (`deploy.Export`) as a job of the queue."""

    key: str  # the export's path inside the study
    export: Export

    def done(self) -> bool:
        return self.export.done()


def transfer_stage(ctx: StudyContext, job: Job, ens_dir: Path, manifest: dict) -> None:
    """Label every stored epoch (each by one worker), then write the manifest of shard digests."""
    tcfg = ctx.cfg.transfer
    source = {"ensemble": str(ens_dir), "split_fingerprint": ctx.data.fingerprint, "tta": ctx.cfg.transfer.tta}
    loaded: list = []

    def ensemble():  # loaded once per worker, and only by a worker that labels
        if not loaded:
            tta = None if ctx.cfg.transfer.tta == "model" else ctx.cfg.transfer.tta
            loaded.append(load_ensemble(ens_dir, ctx.device, tta, ctx.cfg.teachers.external))
        return loaded[0]

    shards = [] if job.done() else [Shard(f"{job.key}/{shard_name(e)}", job.dir / shard_name(e), e)
                                    for e in range(tcfg.epochs)]
    ctx.queue.share(shards, lambda shard: generate(ensemble(), ctx.data.x_train, tcfg, job.dir, source,
                                               progress=ctx.progress, only=[shard.epoch]))

    def write_manifest(_: Job) -> None:  # every shard is there: checked, digested, listed
        # the ensemble is loaded only if a shard must be made again (one was deleted meanwhile)
        info = generate(lambda x: ensemble()(x), ctx.data.x_train, tcfg, job.dir, source, progress=ctx.progress)
        ctx.echo(f"transfer set: {info['epochs']} epochs x {info['images_per_epoch']:,} images, "
             f"{info['bytes'] / 2**20:.1f} MiB stored vs {info['materialized_bytes'] / 2**20:.1f} MiB as images")

    ctx.queue.share([job], write_manifest)


def students_stage(ctx: StudyContext, jobs: list[Job], transfer_dir: Path) -> list[Path]:
    """Train the fixed students, or run one study per setting; return the students' directories."""
    def search(job: Job, wait: bool):
        p = job.params
        return tune_students(ctx.ds, ctx.out, _search_config(ctx.cfg, p["trials"]), transfer_dir, p["family"],
                             p["budget"], p["loss"], TrainConfig(**p["train"]), ctx.device, ctx.cfg.data,
                             progress=ctx.progress, log=ctx.echo,
                             name=job.dir.name, data=ctx.data, wait=wait)

    # First every study's free trials, so that no worker idles at the end of one study while
    # others run its last trials; then each study's end (taking over trials of dead workers).
    pending = [j for j in jobs if j.stage == "search" and not j.done()]
    for job in pending:
        ctx.echo(f"student study {jobs.index(job) + 1}/{len(jobs)}: {job.name} ({job.params['trials']} trials)")
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
            add_test_accuracy(Path(t["dir"]), ctx.data)
        write_json(job.dir / SEARCH_JSON, summary)
    dirs: list[Path] = []
    for job in jobs:
        if job.stage == "search":
            summary = read_json(job.dir / SEARCH_JSON, "unfinished study")
            dirs += [Path(t["dir"]) for t in summary["trials"] if t["state"] == "COMPLETE"]
        else:
            dirs.append(job.dir)
    fixed = largest_first([j for j in jobs if j.stage != "search"], ctx.ds.image_size, ctx.ds.num_classes)

    def train(job: Job) -> None:
        ctx.echo(f"student {jobs.index(job) + 1}/{len(jobs)}: {job.name}")
        try:
            train_student(ctx.ds, transfer_dir, StudentSetting.from_params(job.params),
                          TrainConfig(**job.params["train"]),
                          job.dir, ctx.device, ctx.cfg.data, progress=ctx.progress, data=ctx.data)
        except Diverged as e:  # one bad student must not sink the study; the report lists it
            write_json(job.dir / FAILED, {"job": job.name, "reason": str(e)})
            ctx.echo(f"  failed: {e}")

    ctx.queue.share(fixed, train)
    return dirs


def inference_stage(ctx: StudyContext, dirs: list[Path]) -> dict:
    """inference.csv for every finished model and the ensemble; skipped (with a note in the
    report) when switched off or when onnxruntime is missing."""
    if not ctx.cfg.inference.enabled:
        return {"csv": None, "notes": ["Inference cost not measured (inference.enabled = false)."]}
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return {"csv": None, "notes": ["Inference cost not measured: onnx / onnxruntime are not installed "
                                       "(pip install onnx onnxruntime)."]}
    path = ctx.out / INFERENCE_CSV
    models = reported_models(dirs)

    # The timing is one job, so that no worker times models while another works beside it; its
    # notes are kept for the workers that waited for it. Before it, every export and its check,
    # each a job of its own (any worker takes it).
    job = Job.at(ctx.out, "inference", "inference cost", "inference/" + config_hash(
        {"models": [within(d, ctx.out) for d in models], "runs": ctx.cfg.inference.runs,
         "batch": ctx.cfg.inference.batch}), {}, INFERENCE_NOTES)

    def export(e: ExportJob) -> None:
        error = e.export.run(ctx.ds.x_test, ctx.ds.y_test)
        if error:
            ctx.echo(f"  export failed: {error}")

    exports = [ExportJob(within(Export(d).path, ctx.out), Export(d)) for d in models]
    ctx.queue.share([] if job.done() else exports, export)

    def measure(job: Job) -> None:
        failed = {d: Export(d).failure() for d in models}
        notes = [f"Inference cost not measured for {d}: {e}" for d, e in failed.items() if e]
        external = [Path(d).name for d in dirs if (Path(d) / MODEL_JSON).exists() and is_external(Path(d))]
        if external:
            notes.append(f"External teachers are not exported or timed here ({', '.join(external)}): "
                         "their own files are their exports.")
        rows = measure_study([d for d in models if not failed[d]], ctx.ds.x_test, ctx.ds.y_test, path,
                             progress=ctx.progress,
                             runs=ctx.cfg.inference.runs, batch=ctx.cfg.inference.batch, reuse_export=True,
                             on_error=lambda d, e: notes.append(f"Inference cost not measured for {d}: {e}"))
        ctx.echo(f"inference cost: {len(rows)} models exported to ONNX, checked by onnxruntime and timed -> {path}")
        write_json(job.dir / INFERENCE_NOTES, {"csv": str(path), "notes": notes})

    ctx.queue.share([job], measure)
    return read_json(job.dir / INFERENCE_NOTES, "unfinished inference stage")


def reported_models(dirs: list[Path]) -> list[Path]:
    """The finished models the report shows: the ensemble, and models evaluated on test (in a
    search, only each setting's best by validation see the test set, so only those are timed)."""
    keep = []
    for d in map(Path, dirs):
        if (d / ENSEMBLE_MANIFEST).exists():
            keep.append(d)
        elif ModelResult.exists(d) and ModelResult.load(d).test_acc is not None and not is_external(d):
            keep.append(d)  # an external teacher's file is its own export, in its own runtime
    return keep


def forget_failures(jobs: dict[str, list[Job]], out: Path, echo) -> None:
    """`run --retry-failed`: a failed student (or a failed export) is otherwise done for good,
    since the same seed and settings fail the same way on CPU; after a code or machine change it
    may not."""
    for job in (j for js in jobs.values() for j in js):
        marker = job.dir / FAILED
        if marker.exists():
            for name in (FAILED, CHECKPOINT, SIDECAR, BEST, BEST_PENDING):
                (job.dir / name).unlink(missing_ok=True)
            echo(f"retrying failed job {job.name}")
        if job.dir.is_dir() and Export(job.dir).forget_failure():
            echo(f"retrying the failed export of {job.name}")
            for notes in Path(out).glob(f"inference/*/{INFERENCE_NOTES}"):  # and the timing after it
                notes.unlink()


def study_notes(cfg: StudyConfig, jobs: dict[str, list[Job]]) -> list[str]:
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


