"""What a study costs before it is spent: every job's FLOPs, counted by PyTorch's
FlopCounterMode on the job's own model (models/flops.py, the counter `bench` uses), and a time
estimate from a short calibration of the FLOP/s this machine achieves.

Counted per job: training (forward + backward per training image, times images and epochs),
labelling (the ensemble's forward passes over the transfer set) and evaluation (validation
passes, the test pass, the ONNX checks and timing). Epoch counts are caps for the plateau
schedule (training may stop earlier), and a search trial is counted at its space's default
setting: both are marked as upper bounds or approximations in the plan.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

import torch

from shallowmimic.core.layout import RUN_JSON
from shallowmimic.distill.students import StudentSetting
from shallowmimic.models.flops import inference_flops_per_image, train_flops_per_image
from shallowmimic.models.layers import with_tta
from shallowmimic.models.store import ModelSpec
from shallowmimic.models.teachers import get_teacher

STAGES = ("teachers", "ensemble", "transfer set", "students", "inference")


@dataclass(frozen=True)
class Shape:
    """The data a study computes on: split sizes and image geometry."""

    train: int
    val: int
    test: int
    size: int
    channels: int
    classes: int


@dataclass(frozen=True)
class JobCost:
    stage: str
    name: str
    train: float = 0.0  # FLOPs
    label: float = 0.0
    evaluate: float = 0.0
    note: str = ""  # how the count was made, where it is not exact
    done: bool = False  # finished on disk when the plan was made
    trials: int = 0  # of a search job
    markers: tuple[str, ...] = ()  # files of which any marks it done (what `status` looks at)
    epochs: int = 0  # of training, for progress

    @property
    def total(self) -> float:
        return self.train + self.label + self.evaluate


@dataclass(frozen=True)
class Plan:
    jobs: tuple[JobCost, ...]
    estimate: dict = field(default_factory=dict)  # stage -> seconds, with the calibration used

    @property
    def total(self) -> float:
        return sum(j.total for j in self.jobs)

    @property
    def remaining(self) -> float:
        return sum(j.total for j in self.jobs if not j.done)

    def stage_total(self, stage: str) -> float:
        return sum(j.total for j in self.jobs if j.stage == stage)

    def stages(self) -> list[str]:
        return [s for s in STAGES if any(j.stage == s for j in self.jobs)]

    def to_dict(self, root: Path | None = None) -> dict:
        """As recorded in plan.json and run.json; markers relative to the study directory `root`."""
        def rel(m: str) -> str:
            return Path(m).relative_to(root).as_posix() if root and Path(m).is_relative_to(root) else m

        return {"total_flops": self.total, "remaining_flops": self.remaining,
                "stages": {s: {"jobs": sum(j.stage == s for j in self.jobs), "flops": self.stage_total(s)}
                           for s in self.stages()},
                "jobs": [{**asdict(j), "markers": [rel(m) for m in j.markers], "total": j.total} for j in self.jobs],
                "estimate": self.estimate}


# --- FLOPs per image of one model (cached: a plan has many jobs of one architecture) ---------


@lru_cache(maxsize=256)
def _model_flops(spec: ModelSpec, tta: str | None) -> tuple[float, float]:
    """(training FLOPs per image, inference FLOPs per image in eval mode) of a model; `tta`
    replaces its test-time augmentation (None: its own)."""
    net = spec.build()
    train = train_flops_per_image(net, spec.channels, spec.size)
    net.eval()
    if tta is not None:
        net = with_tta(net, tta).eval()
    return train, inference_flops_per_image(net, torch.zeros(2, spec.channels, spec.size, spec.size))


def train_flops(spec: ModelSpec) -> float:
    """Training FLOPs per image of a model (counted once per architecture, as the plan counts them)."""
    return _model_flops(spec, None)[0]


def teacher_spec(params: dict, shape: Shape, variant: str) -> ModelSpec:
    v = get_teacher(params.get("variant", variant))
    return ModelSpec("teacher", v.name, params.get("spec") or v.default_spec, v.options, shape.channels,
                     shape.size, shape.classes)


def _validations(epochs: int, every: int) -> int:
    return len({e for e in range(1, epochs + 1) if e % every == 0} | {epochs})


def teacher_cost(name: str, mspec: ModelSpec, epochs: int, val_every: int, shape: Shape, stage="teachers",
                 note: str = "") -> JobCost:
    train, infer = _model_flops(mspec, None)
    evaluate = infer * (shape.val * _validations(epochs, val_every) + shape.val + shape.test)  # + stored logits
    return JobCost(stage, name, train=train * shape.train * epochs, evaluate=evaluate, note=note)


def student_cost(name: str, setting: StudentSetting, epochs: int, val_every: int, images: int, shape: Shape,
                 note: str = "") -> JobCost:
    train, infer = _model_flops(setting.model_spec(shape.size, shape.classes), None)
    evaluate = infer * (shape.val * _validations(epochs, val_every) + shape.test)
    return JobCost("students", name, train=train * images * epochs, evaluate=evaluate, note=note)


def labelling_cost(name: str, members: list[ModelSpec], images: int, tta: str) -> JobCost:
    per_image = sum(_model_flops(m, None if tta == "model" else tta)[1] for m in members)
    return JobCost("transfer set", name, label=per_image * images)


def inference_cost(models: list[tuple[str, object, float]], shape: Shape, runs: int, batch: int) -> list[JobCost]:
    """Each model's ONNX export (`models`: name, architecture, inference FLOPs per image),
    checked against PyTorch on the first test images, then the timing of each architecture:
    batch-1 latency (10 warm-up calls + `runs`) and batch throughput (1 + 5 calls), in both
    runtimes."""
    from shallowmimic.deploy.export import CHECK_IMAGES

    check = min(CHECK_IMAGES, shape.test)
    jobs = [JobCost("inference", f"export {name}", evaluate=2 * check * flops) for name, _, flops in models]
    per_arch = {arch: flops for _, arch, flops in models}
    timing = sum(2 * (runs + 10 + 6 * batch) * f for f in per_arch.values())
    return [*jobs, JobCost("inference", f"timing ({len(per_arch)} architectures)", evaluate=timing)]


# --- time: a short calibration of achieved FLOP/s ------------------------------------------


def _achieved(model: torch.nn.Module, x: torch.Tensor, train: bool, seconds: float) -> float:
    """FLOP/s of training steps (or forward passes) of `model` on `x`, after one warm-up call."""
    from shallowmimic.core.device import autocast, memory_format, sync

    device = x.device
    model = model.to(device, memory_format=memory_format(device)).train(train)
    x = x.contiguous(memory_format=memory_format(device))
    flops = (train_flops_per_image(model, x.shape[1], x.shape[2]) if train else
             inference_flops_per_image(model.eval(), x[:2])) * len(x)
    model.train(train)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        with autocast(device):
            out = model(x)
        if train:
            opt.zero_grad(set_to_none=True)
            out.float().square().mean().backward()
            opt.step()

    with torch.set_grad_enabled(train):
        step()
        sync(device)
        n, t0 = 0, time.perf_counter()
        while n < 1 or (time.perf_counter() - t0 < seconds and n < 20):
            step()
            n += 1
        sync(device)
    return flops * n / (time.perf_counter() - t0)


def calibrate(teacher: ModelSpec | None, student: ModelSpec | None, device: torch.device,
              threads: int, seconds: float = 0.3) -> dict[str, float]:
    """Achieved FLOP/s of one worker (with `threads` CPU threads) for each kind of work: a
    teacher's training step (batch 32), the largest student's (batch 64), labelling (a
    teacher's forward, batch 128). Seconds, not minutes: a few steps of each."""
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        rates = {}
        if teacher is not None:
            size = (teacher.channels, teacher.size, teacher.size)
            rates["teacher"] = _achieved(teacher.build(), torch.randn(32, *size, device=device), True, seconds)
            rates["label"] = _achieved(teacher.build(), torch.randn(128, *size, device=device), False, seconds)
        if student is not None:
            size = (student.channels, student.size, student.size)
            rates["student"] = _achieved(student.build(), torch.randn(64, *size, device=device), True, seconds)
        return rates
    finally:
        torch.set_num_threads(before)


def estimate(plan: Plan, rates: dict[str, float], workers: int) -> dict:
    """Seconds per stage: each stage's FLOPs left to do at the calibrated rate of its kind of
    work, its jobs spread over min(workers, jobs) workers. An estimate: it ignores augmentation,
    data movement, the uncounted elementwise work and how evenly jobs divide."""
    fallback = min(rates.values()) if rates else 0.0
    kind = {"teachers": "teacher", "transfer set": "label", "students": "student", "inference": "label"}
    out = {}
    for stage in plan.stages():
        jobs = [j for j in plan.jobs if j.stage == stage and not j.done]
        rate = rates.get(kind.get(stage, ""), fallback)
        parallel = max(1, min(workers, sum(j.total > 0 for j in jobs)))
        # no faster than its longest job, which one worker does alone
        flops = max(sum(j.total for j in jobs) / parallel, max((j.total for j in jobs), default=0.0))
        out[stage] = flops / rate if rate else 0.0
    return {"seconds": out, "total_s": sum(out.values()), "rates_gflops": {k: v / 1e9 for k, v in rates.items()},
            "workers": workers}


def with_estimate(plan: Plan, teacher: ModelSpec | None, student: ModelSpec | None, device: torch.device,
                  workers: int) -> Plan:
    """The plan with its time estimate, from a calibration of one worker's share of this machine."""
    import os

    from shallowmimic.core.device import machine_reference
    from shallowmimic.deploy.inference import cores

    threads = int(os.environ.get("SHALLOWMIMIC_THREADS") or 0) or max(1, cores() // workers)
    t0 = time.perf_counter()
    rates = calibrate(teacher, student, device, threads)
    seconds = time.perf_counter() - t0
    gpus = torch.cuda.device_count() if device.type == "cuda" else workers
    est = estimate(plan, rates, min(workers, gpus) if device.type == "cuda" else workers)
    est.update(workers=workers, threads=threads if device.type == "cpu" else 0, device=str(device),
               calibration_s=round(seconds, 1), reference_gflops=round(machine_reference(device), 1))
    return replace(plan, estimate=est)


# --- a study's plan ----------------------------------------------------------------------


def shape_of(ds, split) -> Shape:
    """Split sizes as the study will see them (limits applied), from a loaded dataset."""
    train = len(ds.x_train) - split.val_size
    val = split.val_size
    return Shape(train=min(train, split.train_limit or train), val=min(val, split.val_limit or val),
                 test=len(ds.x_test), size=ds.image_size, channels=3, classes=ds.num_classes)


def plan_cost(cfg, jobs: dict[str, list], shape: Shape, out: Path | None = None) -> Plan:
    """The counted cost of every job of `planning.plan(cfg, ...)`: teachers (or the teacher
    search), the transfer set's epochs, students (or their searches), the inference stage; each
    with the files that mark it done, and marked done where they are on disk."""
    from shallowmimic.deploy.export import default_path, failure_path
    from shallowmimic.distill.transfer import shard_name
    from shallowmimic.study.planning import FAILED

    tr = cfg.transfer
    costs, members, models = _teacher_costs(cfg.teachers, jobs["teachers"], shape)
    ens = jobs["ensemble"][0]
    costs.append(_marked(JobCost("ensemble", ens.name, note="reads the members' stored logits"), ens.markers()))
    chosen = sorted(members, key=lambda m: -_model_flops(m, None)[1])[: cfg.ensemble.k]  # the costliest k
    if chosen:
        models.append((ens.name, "ensemble", sum(_model_flops(m, None)[1] for m in chosen), ens.dir))
    transfer = jobs["transfer"][0]
    images = tr.images or shape.train
    costs += [_marked(labelling_cost(f"transfer epoch {e}", chosen, images, tr.tta),
                      (transfer.dir / shard_name(e), *transfer.markers())) for e in range(tr.epochs)]
    costs.append(_marked(JobCost("transfer set", "transfer set manifest", note="checks and digests the shards"),
                         transfer.markers()))
    for job in jobs["students"]:
        p, train = job.params, job.params["train"]
        if job.stage == "search":
            setting = StudentSetting(p["family"], p["budget"], p["loss"])
            one = student_cost(job.name, setting, train["epochs"], train["val_every"], images, shape)
            costs.append(_marked(_times(one, p["trials"], f"{p['trials']} trials at mid-range widths; epochs are caps"),
                                 job.markers()))
            continue
        setting = StudentSetting.from_params(p)
        cap = "epochs are caps (plateau schedule)" if train["schedule"] == "plateau" else ""
        costs.append(_marked(student_cost(job.name, setting, train["epochs"], train["val_every"], images, shape,
                                          note=cap), job.markers(), train["epochs"]))
        mspec = setting.model_spec(shape.size, shape.classes)
        models.append((job.name, mspec, _model_flops(mspec, None)[1], job.dir))
    if cfg.inference.enabled and find_spec("onnxruntime") and find_spec("onnx"):  # else the stage is skipped
        exports = inference_cost([(n, a, f) for n, a, f, _ in models], shape, cfg.inference.runs,
                                 cfg.inference.batch)
        for cost, (_, arch, _, d) in zip(exports, models, strict=False):
            onnx = default_path(d, ensemble=arch == "ensemble")
            # a model that failed (a diverged student) is never exported: its failure ends the job too
            costs.append(_marked(cost, (onnx, failure_path(onnx), d / FAILED)))
        # the timing's own marker is keyed by the models it timed; the run record follows it
        costs.append(_marked(exports[-1], (Path(out or ".") / RUN_JSON,)))
    return Plan(tuple(costs))


def _teacher_costs(t, jobs: list, shape: Shape) -> tuple[list[JobCost], list[ModelSpec], list[tuple]]:
    """The teachers' (or the teacher search's) costs, the candidates for the ensemble, and the
    models the inference stage exports, as (name, spec, FLOPs per image, directory)."""
    variant = get_teacher(t.variant)
    costs: list[JobCost] = []
    members: list[ModelSpec] = []
    models: list[tuple[str, object, float, Path]] = []
    for job in jobs:
        if job.stage == "external":  # its own file: nothing here can count what it computes
            costs.append(_marked(JobCost("teachers", job.name, note="external teacher: its FLOPs (evaluation, "
                                         "labelling) are not counted"), job.markers()))
            continue
        if job.stage == "search":  # paper teachers, counted at the middle of the search space
            mspec = teacher_spec({"variant": "paper"}, shape, "paper")
            n = job.params["trials"]
            one = teacher_cost(job.name, mspec, t.epochs, 1, shape)
            costs.append(_marked(_times(one, n, f"{n} trials at the middle of the search space; epochs are caps"),
                                 job.markers()))
            members += [mspec] * n
            continue
        mspec = teacher_spec(job.params, shape, t.variant)
        cap = "epochs are caps (plateau schedule)" if (t.schedule or variant.recipe.schedule) == "plateau" else ""
        costs.append(_marked(teacher_cost(job.name, mspec, t.epochs, variant.recipe.val_every, shape, note=cap),
                             job.markers(), t.epochs))
        members.append(mspec)
        models.append((job.name, mspec, _model_flops(mspec, None)[1], job.dir))
    return costs, members, models


def _marked(cost: JobCost, markers, epochs: int = 0) -> JobCost:
    markers = tuple(str(m) for m in markers)
    return replace(cost, markers=markers, epochs=epochs, done=any(Path(m).exists() for m in markers))


def _times(one: JobCost, n: int, note: str) -> JobCost:
    return JobCost(one.stage, one.name, one.train * n, one.label * n, one.evaluate * n, note, trials=n)


# --- text ----------------------------------------------------------------------------------


def _tf(flops: float) -> str:
    return f"{flops / 1e12:,.2f}" if flops < 1e13 else f"{flops / 1e12:,.1f}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:,.1f} min" if seconds < 5400 else f"{seconds / 3600:,.1f} h"


def format_plan(plan: Plan, jobs: bool = True) -> str:
    """The plan as the dry run and every run's start print it: per stage its jobs and counted
    TFLOP (training / labelling / evaluation), each job's count, the total, and the estimate."""
    lines = [f"{'stage':<13} {'jobs':>5} {'done':>5} {'train':>9} {'label':>9} {'eval':>9} {'TFLOP':>9}"
             + ("  estimate" if plan.estimate else "")]
    est = plan.estimate.get("seconds", {})
    for stage in plan.stages():
        js = [j for j in plan.jobs if j.stage == stage]
        part = lambda key, js=js: _tf(sum(getattr(j, key) for j in js))  # noqa: E731
        lines.append(f"{stage:<13} {len(js):>5} {sum(j.done for j in js):>5} {part('train'):>9} {part('label'):>9} "
                     f"{part('evaluate'):>9} {_tf(plan.stage_total(stage)):>9}"
                     + (f"  {_minutes(est[stage])}" if stage in est else ""))
    lines.append(f"{'total':<13} {len(plan.jobs):>5} {sum(j.done for j in plan.jobs):>5} {'':>9} {'':>9} {'':>9} "
                 f"{_tf(plan.total):>9}" + (f"  {_minutes(plan.estimate['total_s'])}" if plan.estimate else ""))
    if plan.remaining < plan.total:
        lines.append(f"left to do: {_tf(plan.remaining)} TFLOP")
    if jobs:
        lines.append("jobs (TFLOP):")
        lines += [f"  {j.stage:<13} {j.name:<34} {_tf(j.total):>9}" + ("  done" if j.done else "")
                  + (f"  ({j.note})" if j.note else "") for j in plan.jobs if j.total or j.note]
    if plan.estimate and not plan.estimate["rates_gflops"]:
        lines.append("no time estimate: the plan has no model to calibrate on")
    elif plan.estimate:
        e = plan.estimate
        rates = ", ".join(f"{k} {v:,.0f}" for k, v in e["rates_gflops"].items())
        lines.append(f"estimated time: {_minutes(e['total_s'])} with {e['workers']} worker(s) of "
                     f"{e['threads']} thread(s) on {e['device']}, from a {e['calibration_s']:.0f}-second calibration "
                     f"(achieved GFLOP/s per worker: {rates}; machine reference {e['reference_gflops']:,.0f}). "
                     "An estimate: augmentation, data movement and uncounted elementwise work are not in it.")
    lines.append("FLOPs counted by PyTorch's FlopCounterMode on each job's model (matmuls and convolutions).")
    return "\n".join(lines)
