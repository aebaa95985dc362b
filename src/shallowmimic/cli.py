"""The `shallowmimic` command line. It only parses arguments and calls the library."""

from __future__ import annotations

from pathlib import Path

import click

from .errors import UserError


class _Group(click.Group):
    """Turns `UserError` anywhere below into click's one-line `Error: ...` and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            raise click.ClickException(str(e)) from None


class _Registry(click.Choice):
    """The choices of a registry of the library (`module.NAME`), read when click first needs
    them, so that the CLI keeps one list per concept and `--help` still imports no torch."""

    def __init__(self, module: str, name: str, keys=lambda r: r):
        self._source = (module, name, keys)
        super().__init__((), case_sensitive=True)

    @property
    def choices(self):
        import importlib

        module, name, keys = self._source
        return tuple(keys(getattr(importlib.import_module(f"shallowmimic.{module}"), name)))

    @choices.setter
    def choices(self, _):  # click's __init__ assigns; the registry is the source
        pass


def _options(*opts):
    """One decorator applying several click options, in the order given."""

    def decorate(f):
        for opt in reversed(opts):
            f = opt(f)
        return f

    return decorate


def data_option(f):
    return click.option(
        "--data",
        "data_path",
        type=click.Path(path_type=Path),
        default=None,
        help="CIFAR-10 source: .npz, cifar-10-python.tar.gz or cifar-10-batches-py/. "
        "Default: $SHALLOWMIMIC_DATA, then the cache (downloading if needed).",
    )(f)


def _set_precision(ctx, param, value):
    from .device import set_precision

    set_precision(value)


def _set_compile(ctx, param, value):
    from .device import set_compile

    set_compile(value)


def device_option(f):
    f = click.option(
        "--compile", is_flag=True, expose_value=False, callback=_set_compile,
        help="Train through torch.compile (pays on GPUs for long runs; compiling takes tens of seconds).",
    )(f)
    f = click.option(
        "--precision", type=_Registry("device", "PRECISIONS"), default="auto", show_default=True,
        expose_value=False, callback=_set_precision,
        help="bf16 autocast or float32; auto: bf16 on CUDA and on CPUs with AMX, else fp32.",
    )(f)
    return click.option(
        "--device", default="auto", show_default=True, callback=_check_device, help="cpu, cuda, cuda:N or auto."
    )(f)


def _check_device(ctx, param, value):
    """The device name checked while parsing, before any data is loaded."""
    if value is None:
        return value
    from .device import check_device

    try:
        return check_device(value)
    except UserError as e:
        raise click.BadParameter(str(e).split(": ", 1)[-1]) from None


def _load(data_path):
    from .data import load_dataset
    from .download import resolve_data_path

    return load_dataset(resolve_data_path(data_path))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shallowmimic")
def main():
    """Shallow students mimicking deep CNN ensembles on CIFAR-10 (Urban et al., ICLR 2017)."""
    from .device import configure_threads

    configure_threads()


# --- data -----------------------------------------------------------------------------------


@main.group(cls=_Group)
def data():
    """Get, inspect and preview the dataset."""


@data.command("download")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None,
              help="Target directory (default: the cache, $SHALLOWMIMIC_CACHE).")
@click.option("--url", default=None, help="Mirror URL of cifar-10-python.tar.gz (file:// works).")
def data_download(directory, url):
    """Download the official CIFAR-10 python archive and verify its MD5."""
    from .download import CIFAR_URL, download_cifar10

    path = download_cifar10(directory, url=url or CIFAR_URL)
    click.echo(f"CIFAR-10 archive ready: {path}")


@data.command("info")
@data_option
@click.option("--val-size", default=10_000, show_default=True, help="Validation images.")
@click.option("--split-seed", default=0, show_default=True, help="Seed of the train/val split.")
def data_info(data_path, val_size, split_seed):
    """Source, checksum, class counts per split and the train/validation split."""
    from .info import dataset_info

    click.echo(dataset_info(_load(data_path), val_size, split_seed))


@data.command("preview")
@data_option
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output image (.png).")
@click.option("--images", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Rows (distinct images), 1-64.")
@click.option("--augmented", type=click.IntRange(0, 32), default=7, show_default=True,
              help="Augmented copies per image, 0-32.")
@click.option("--constants", type=click.Choice(["student", "teacher"]), default="student",
              show_default=True, help="Which HSV constants to show.")
@click.option("--seed", default=0, show_default=True)
def data_preview(data_path, out, images, augmented, constants, seed):
    """Save a grid of training images and their augmentations."""
    from .augment import STUDENT_HSV, TEACHER_HSV
    from .preview import save_preview

    hsv = STUDENT_HSV if constants == "student" else TEACHER_HSV
    path = save_preview(_load(data_path), out, hsv, images, augmented, seed)
    click.echo(f"wrote {path}")


# --- bench ----------------------------------------------------------------------------------


@main.group(cls=_Group)
def bench():
    """Throughput benchmarks (images/s)."""


@bench.command("augment")
@device_option
@click.option("--batch", "batches", multiple=True, type=int, help="Batch size(s) to time.")
@click.option("--size", default=32, show_default=True, help="Image side in pixels.")
def bench_augment_cmd(device, batches, size):
    """Images/s of the batched augmentation on the chosen device."""
    from .bench import AUGMENT_COLUMNS, bench_augment, format_table, reference_line
    from .device import resolve_device

    dev = resolve_device(device)
    click.echo(reference_line(dev))
    rows = bench_augment(dev, tuple(batches) or (256, 1024, 8192), size)
    click.echo(format_table(rows, AUGMENT_COLUMNS))




# --- arch -----------------------------------------------------------------------------------


@main.command("arch")
@click.argument("spec", required=False)
@click.option("--student", "family", default=None, help="Student family (mlp1..mlp5, conv1..conv4).")
@click.option("--budget", default=None, help="Parameter budget for --student, e.g. 1M, 3.16M, 300k.")
@click.option("--widths", default=None,
              help="Free widths (or unit ratios for mlp2..5), comma-separated; default: mid-range.")
@click.option("--teacher", "variant", type=_Registry("families", "TEACHERS", tuple), default=None,
              help="Teacher variant: its default spec.")
@click.option("--size", type=click.IntRange(min=1), default=32, show_default=True, help="Input image side.")
@click.option("--classes", type=click.IntRange(min=2), default=10, show_default=True, help="Number of classes.")
@click.option("--batchnorm", is_flag=True, help="Count batch-norm parameters too.")
def arch_cmd(spec, family, budget, widths, variant, size, classes, batchnorm):
    """Print the layer table and parameter count of SPEC (the paper's notation, e.g.
    76c2-mp-126c2-mp-148c4-mp-1200fc2), or solve a student for a budget."""
    from .arch import parse_spec
    from .report_arch import arch_table, solve_from_cli

    if family:
        if spec:
            raise UserError("give either SPEC or --student, not both")
        solved = solve_from_cli(family, budget, widths, size, classes)
        spec = solved.spec
        click.echo(f"{family} at budget {solved.budget:,}: {spec} "
                   f"({solved.params:,} parameters, {100 * (solved.params / solved.budget - 1):+.3f}%)")
    elif variant:
        from .families import get_teacher

        v = get_teacher(variant)
        spec, batchnorm = v.default_spec, v.options.batchnorm
    if not spec:
        raise UserError("give a SPEC, --student FAMILY --budget B, or --teacher VARIANT")
    click.echo(arch_table(parse_spec(spec), 3, size, classes, batchnorm))


# --- teacher --------------------------------------------------------------------------------


split_options = _options(
    click.option("--val-size", type=click.IntRange(min=1), default=10_000, show_default=True,
                 help="Validation images split off the training set."),
    click.option("--train-limit", type=click.IntRange(min=0), default=0, help="Use only N training images (0: all)."),
    click.option("--val-limit", type=click.IntRange(min=0), default=0, help="Use only N validation images (0: all)."),
)

#: Options shared by every command that trains a model.
train_options = _options(
    click.option("--epochs", type=int, default=None, help="Epoch cap."),
    click.option("--batch-size", type=int, default=None),
    click.option("--lr", type=float, default=None, help="Peak / initial learning rate."),
    click.option("--momentum", type=float, default=None, help="Nesterov momentum."),
    click.option("--schedule", type=_Registry("schedule", "SCHEDULES"), default=None),
    click.option("--seed", type=int, default=0, show_default=True),
    split_options,
    click.option("--resume", is_flag=True, help="Continue the run in --out."),
    click.option("--no-progress", is_flag=True, help="No progress bars."),
)


@main.group(cls=_Group)
def teacher():
    """Train and evaluate teachers."""


@teacher.command("train")
@data_option
@device_option
@click.option("--variant", type=_Registry("families", "TEACHERS", tuple), default="fast", show_default=True,
              help="Teacher variant: its layers' options and training defaults.")
@click.option("--arch", "spec", default=None, help="Architecture spec (default: the variant's).")
@click.option("--scales", default=None, help="Four width scales C1,C2,C3,H in [0,1] (paper ranges).")
@click.option("--weight-decay", type=float, default=None)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Run directory.")
@train_options
def teacher_train(data_path, device, variant, spec, scales, weight_decay, out, epochs, batch_size, lr,
                  momentum, schedule, seed, val_size, train_limit, val_limit, resume, no_progress):
    """Train one teacher with online augmentation (teacher HSV constants)."""
    from .device import resolve_device
    from .families import teacher_spec
    from .teachers import SplitConfig, teacher_config, train_teacher

    if scales:
        if spec:
            raise UserError("give either --arch or --scales, not both")
        spec = teacher_spec(_floats(scales, "--scales"))
    cfg = teacher_config(variant, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                         schedule=schedule, seed=seed, weight_decay=weight_decay)
    r = train_teacher(_load(data_path), out, variant, spec, cfg, resolve_device(device),
                      SplitConfig(val_size, train_limit=train_limit, val_limit=val_limit), resume=resume,
                      progress=not no_progress)
    click.echo(f"teacher {r['spec']} ({r['params']:,} params): val {100 * r['val_acc']:.2f}%  "
               f"test {100 * r['test_acc']:.2f}%  best epoch {r['best_epoch']}/{r['epochs']}  "
               f"{r['images_per_s']:,.0f} images/s  {r['wall_s']:.0f}s  -> {out}")


@teacher.command("eval")
@data_option
@device_option
@click.argument("directory", type=click.Path(path_type=Path))
def teacher_eval(data_path, device, directory):
    """Validation and test accuracy of a trained model directory."""
    from .device import resolve_device
    from .teachers import eval_model

    r = eval_model(_load(data_path), directory, resolve_device(device))
    click.echo(f"{r['spec']} ({r['params']:,} params): val {100 * r['val_acc']:.2f}%  "
               f"test {100 * r['test_acc']:.2f}%")


@bench.command("train")
@device_option
@click.option("--steps", default=5, show_default=True, help="Timed steps per model.")
def bench_train_cmd(device, steps):
    """Training images/s for a few teacher and student sizes."""
    from .bench import TRAIN_COLUMNS, bench_train, format_table, peak_flops, reference_line
    from .device import precision, resolve_device

    dev = resolve_device(device)
    click.echo(reference_line(dev))
    click.echo(f"peak for 'of peak': {peak_flops(dev, precision(dev))[1]}")
    click.echo(format_table(bench_train(dev, steps), TRAIN_COLUMNS))
    click.echo(reference_line(dev) + "  (after)")


@bench.command("infer")
@click.argument("run_dir", type=click.Path(path_type=Path))
@data_option
@click.option("--runs", default=100, show_default=True, help="Timed batch-1 calls per model and runtime.")
@click.option("--batch", default=256, show_default=True, help="Throughput batch size.")
def bench_infer_cmd(run_dir, data_path, runs, batch):
    """Inference cost of every model of a study (ONNX export, FLOPs, latency, throughput) ->
    RUN_DIR/inference.csv, and the report's Figure 2."""
    from .bench import INFER_COLUMNS, format_table, reference_line
    from .pipeline import measure_inference

    click.echo(reference_line(_cpu()))
    rows = measure_inference(run_dir, data_path, runs, batch)
    click.echo(f"threads: batch-1 latency {int(rows[0]['latency_threads'])}, batch-{batch} throughput "
               f"{int(rows[0]['throughput_threads'])}; fp32 on the CPU")
    click.echo(format_table([{k: float("nan") if v is None else v for k, v in r.items()} for r in rows],
                            INFER_COLUMNS))
    click.echo(reference_line(_cpu()) + "  (after)")
    click.echo(f"wrote {run_dir}/inference.csv and {run_dir}/report/ (figure2.png/svg)")


def _cpu():
    import torch

    return torch.device("cpu")


@bench.command("teacher")
@data_option
@device_option
@click.option("--run", "runs", multiple=True, default=("fast:7",), show_default=True,
              help="VARIANT:EPOCHS to train (repeatable), e.g. --run fast:7 --run bn:10.")
@click.option("--seed", default=0, show_default=True)
@click.option("--batch-size", type=int, default=None, help="Batch size for every run (default: the variant's).")
@click.option("--lr", type=float, default=None, help="Learning rate for every run (default: the variant's).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/bench-teacher"), show_default=True,
              help="Where the teachers are trained (re-running reuses finished ones).")
def bench_teacher_cmd(data_path, device, runs, seed, batch_size, lr, out):
    """Teacher test accuracy against training wall time, on the 40k training split."""
    from .bench import TEACHER_COLUMNS, bench_teacher, format_table, reference_line
    from .device import resolve_device
    from .families import get_teacher

    parsed = []
    for r in runs:
        variant, _, epochs = r.partition(":")
        get_teacher(variant)
        if not epochs.isdigit() or int(epochs) < 1:
            raise UserError(f"--run {r!r}: expected VARIANT:EPOCHS, e.g. fast:7")
        parsed.append((variant, int(epochs)))
    if (batch_size is not None and batch_size < 1) or (lr is not None and not lr > 0):
        raise UserError(f"--batch-size must be at least 1 and --lr above 0, got {batch_size} and {lr}")
    dev = resolve_device(device)
    click.echo(reference_line(dev))
    rows = bench_teacher(_load(data_path), dev, out, parsed, seed, batch_size=batch_size, lr=lr)
    click.echo(format_table(rows, TEACHER_COLUMNS))
    click.echo(reference_line(dev) + "  (after)")


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected comma-separated numbers") from None


# --- ensemble, transfer set, students -------------------------------------------------------


@main.command("ensemble")
@data_option
@device_option
@click.option("--teachers", "roots", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Directory searched (recursively) for finished teachers; repeatable.")
@click.option("--k", default=16, show_default=True, help="Number of best teachers to average.")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@split_options
def ensemble_cmd(data_path, device, roots, k, out, val_size, train_limit, val_limit):
    """Average the logits of the K best teachers (by validation accuracy); evaluate all."""
    from .device import resolve_device
    from .ensemble import build_ensemble, find_teachers
    from .teachers import SplitConfig, split_tensors

    dev = resolve_device(device)
    data = split_tensors(_load(data_path), SplitConfig(val_size, 0, train_limit, val_limit), dev)
    m = build_ensemble(find_teachers(list(roots)), k, data, out, dev)
    for r in m["members"]:
        click.echo(f"  {r['spec']:<40} val {100 * r['val_acc']:.2f}%  test {100 * r['test_acc']:.2f}%")
    click.echo(f"ensemble of {k} ({m['params']:,} params): val {100 * m['val_acc']:.2f}%  "
               f"test {100 * m['test_acc']:.2f}%  -> {out}")


@main.command("transfer")
@data_option
@device_option
@click.option("--ensemble", "ensemble_dir", type=click.Path(path_type=Path), required=True)
@click.option("--epochs", default=160, show_default=True, help="Augmented epochs to generate.")
@click.option("--seed", default=0, show_default=True)
@click.option("--materialize", is_flag=True, help="Also write the rendered images (uint8).")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--rebuild", is_flag=True,
              help="Make every shard again, even those already in --out (which are otherwise kept if they "
                   "were made the same way, and an error if not).")
@click.option("--no-progress", is_flag=True)
@split_options
def transfer_cmd(data_path, device, ensemble_dir, epochs, seed, materialize, out, rebuild, no_progress, val_size,
                 train_limit, val_limit):
    """Generate (or resume) the transfer set labelled with the ensemble's logits."""
    from .device import resolve_device
    from .ensemble import load_ensemble, read_manifest
    from .teachers import SplitConfig, split_tensors
    from .transfer import TransferConfig, generate

    dev = resolve_device(device)
    data = split_tensors(_load(data_path), SplitConfig(val_size, 0, train_limit, val_limit), dev)
    if read_manifest(ensemble_dir)["split_fingerprint"] != data["fingerprint"]:
        raise UserError(f"{ensemble_dir}: the ensemble was evaluated on another train/validation split")
    info = generate(load_ensemble(ensemble_dir, dev), data["x_train"], TransferConfig(epochs, seed, 1000, materialize),
                    out, {"ensemble": str(ensemble_dir), "split_fingerprint": data["fingerprint"]},
                    progress=not no_progress, rebuild=rebuild)
    click.echo(f"transfer set: {epochs} epochs x {info['images_per_epoch']:,} images: {info['bytes'] / 2**20:.1f} MiB "
               f"stored vs {info['materialized_bytes'] / 2**20:.1f} MiB as images -> {out}")


@main.group(cls=_Group)
def student():
    """Train students on a transfer set."""


@student.command("train")
@data_option
@device_option
@click.option("--family", required=True, help="mlp1..mlp5, conv1..conv4.")
@click.option("--budget", required=True, help="Parameter budget, e.g. 1M, 3.16M, 300k.")
@click.option("--widths", default=None, help="Free widths (ratios for mlp2..5); default mid-range.")
@click.option("--loss", type=_Registry("losses", "LOSSES"), default="mimic", show_default=True)
@click.option("--init-scale", default=1.0, show_default=True)
@click.option("--input-scale", default=1.0, show_default=True)
@click.option("--grad-clip", type=float, default=None,
              help="Clip the gradient norm (0: off). Default: the loss's own (mimic 5, hard and kd off).")
@click.option("--kd-temperature", type=float, default=4.0, show_default=True, help="The kd loss's temperature.")
@click.option("--kd-alpha", type=float, default=0.9, show_default=True, help="The kd loss's weight on soft targets.")
@click.option("--transfer", "transfer_dir", type=click.Path(path_type=Path), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
@train_options
def student_train(data_path, device, family, budget, widths, loss, init_scale, input_scale, grad_clip, kd_temperature,
                  kd_alpha, transfer_dir, out, epochs, batch_size, lr, momentum, schedule, seed, val_size, train_limit,
                  val_limit, resume, no_progress):
    """Train one student (budget solved for its family) on the transfer set."""
    from .budget import parse_budget
    from .device import resolve_device
    from .report_arch import parse_free
    from .students import StudentSetting, train_student
    from .teachers import SplitConfig
    from .train import TrainConfig

    setting = StudentSetting(family, parse_budget(budget), loss, parse_free(family, widths), init_scale, input_scale)
    given = dict(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, schedule=schedule)
    from .losses import default_grad_clip

    clip = default_grad_clip(loss) if grad_clip is None else grad_clip
    cfg = TrainConfig(loss=loss, seed=seed, grad_clip=clip, kd_temperature=kd_temperature, kd_alpha=kd_alpha,
                      **{k: v for k, v in given.items() if v is not None})
    if (out / "checkpoint.safetensors").exists() and not resume:
        raise UserError(f"{out}: already holds a training run; pass --resume or choose another --out")
    from .transfer import read_manifest

    read_manifest(transfer_dir)
    r = train_student(_load(data_path), transfer_dir, setting, cfg, out, resolve_device(device),
                      SplitConfig(val_size, 0, train_limit, val_limit), progress=not no_progress)
    click.echo(f"{family} {r['spec']} ({r['params']:,} params, budget {r['budget']:,}) {loss}: "
               f"val {100 * r['val_acc']:.2f}%  test {100 * r['test_acc']:.2f}%  -> {out}")


# --- the whole study ------------------------------------------------------------------------


@main.command("run")
@data_option
@click.option("--preset", default="quick", show_default=True,
              help="smoke, quick, paper, or a .toml file (which may start with extends = \"quick\").")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Study directory (required unless --print-config).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override any config field, e.g. --set students.epochs=5 (repeatable).")
@click.option("--seed", type=int, default=None,
              help="Every seed of the study (split, teachers, transfer set, students, search); a --set of "
                   "one of them still wins.")
@click.option("--print-config", is_flag=True, help="Print the resolved config as TOML and exit.")
@click.option("--device", default=None, callback=_check_device,
              help="cpu, cuda, cuda:N or auto (default: the preset's).")
@click.option("--precision", type=_Registry("device", "PRECISIONS"), default=None,
              help="bf16 autocast or float32 (default: the preset's, auto: bf16 on CUDA and AMX CPUs).")
@click.option("--compile", "compile_", is_flag=True, help="Train through torch.compile (pays on GPUs for long runs).")
@click.option("--retry-failed", is_flag=True,
              help="Train again the students marked failed (diverged); otherwise a failed job stays failed.")
@click.option("--no-progress", is_flag=True)
@click.option("--workers", type=int, default=1, show_default=True,
              help="Start this many cooperating workers here (a GPU each when as many are visible, else "
                   "the CPU threads divided). The same command started on other machines with a shared "
                   "--set search.storage joins them.")
@click.option("--no-report", is_flag=True,
              help="Stop after run.json and leave the report to another worker (`--workers N` gives it to "
                   "worker 0) or to `shallowmimic report`.")
@click.option("--dry-run", is_flag=True,
              help="Print the plan (every stage and job, its counted FLOPs, the total) and a time estimate "
                   "from a few seconds' calibration; train and write nothing.")
def run_cmd(data_path, preset, out, overrides, seed, print_config, device, precision, compile_, retry_failed,
            no_progress, workers, no_report, dry_run):
    """Run the whole study (teachers -> ensemble -> transfer set -> students -> report).
    Re-running the same command resumes; finished work is skipped. Several runs of one study
    (this command started again, or --workers N) divide its jobs between them."""
    from .study import load_study, seed_overrides

    ov = (seed_overrides(seed) if seed is not None else []) + list(overrides) + \
        ([f'device="{device}"'] if device else []) + \
        ([f'precision="{precision}"'] if precision else []) + (["compile=true"] if compile_ else [])
    cfg = load_study(preset, ov)  # a bad config fails here, once, not in every worker
    if print_config:
        from dataclasses import asdict

        from .config import to_toml

        click.echo(to_toml(asdict(cfg)), nl=False)
        return
    if out is None:
        raise click.UsageError("Missing option '--out'.")
    from .pipeline import run_study
    if workers < 1:
        raise UserError(f"--workers {workers}: expected 1 or more")
    from .pipeline import dry_run as plan_only

    if dry_run:
        plan_only(cfg, out, data_path, workers)
        return
    if workers != 1:
        from .launch import launch

        if retry_failed:
            raise UserError("--retry-failed with --workers: run it once with one worker first")
        plan_only(cfg, out, data_path, workers, starting=True)
        args = ["--preset", preset, "--out", str(out), "--no-progress", *(a for o in ov for a in ("--set", o))]
        launch(args + (["--data", str(data_path)] if data_path else []), workers, out, cfg.device, echo=click.echo,
               report=not no_report)
        return
    run_study(cfg, out, data_path, progress=not no_progress, retry_failed=retry_failed, report=not no_report)


@main.command("status")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--watch", type=float, default=0.0, metavar="SECONDS",
              help="Print again every SECONDS until the study has finished (0: once).")
def status_cmd(directory, watch):
    """Where a study is, running or finished: jobs done per stage, each worker's job and epoch,
    counted FLOPs done, elapsed time and ETA. Reads the study directory; never joins the study."""
    import time

    from .status import study_status

    if watch < 0:
        raise UserError(f"--watch {watch}: expected 0 or more seconds")
    while True:
        status = study_status(directory)
        click.echo("\n".join(status.lines()))
        if not watch or status.finished:
            return
        time.sleep(watch)


@main.command("report")
@click.argument("directory", type=click.Path(path_type=Path))
def report_cmd(directory):
    """(Re)write the report of a study directory: results, tables, findings, Figure 1."""
    from .pipeline import report_only

    r = report_only(directory)
    click.echo(f"wrote {directory}/report/ (report.md, report.html, results.csv, results.json, figure1.png/svg)")
    for f in r["findings"]:
        click.echo("  " + f.line())


@main.command("export")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="ONNX file to write (default: DIRECTORY/model.onnx, or ensemble.onnx for an ensemble).")
@click.option("--check-only", is_flag=True, help="Check an existing ONNX file instead of writing one.")
@data_option
def export_cmd(directory, out, check_only, data_path):
    """Write a teacher, student or ensemble directory as one ONNX graph (uint8 images in, logits
    out; dynamic batch) and check it with onnxruntime against PyTorch on 1,000 test images."""
    from .export import check_existing, check_request, export_onnx

    check_request(directory, out, check_only)
    ds = _load(data_path)
    r = (check_existing if check_only else export_onnx)(directory, ds.x_test, ds.y_test, out)
    click.echo(f"{r['path']}: {'checked' if check_only else 'written'}; largest |logit difference| "
               f"onnxruntime vs PyTorch {r['max_abs_logit_diff']:.2e} (tolerance {r['tolerance']:g}) on "
               f"{r['images']} test images; accuracy there {100 * r['torch_acc']:.2f}% (PyTorch), "
               f"{100 * r['onnx_acc']:.2f}% (onnxruntime)")


# --- hyperparameter search ------------------------------------------------------------------


search_options = _options(
    click.option("--trials", type=int, default=6, show_default=True,
                 help="Completed trials the study should reach (all workers together)."),
    click.option("--storage", default=None,
                 help="SQLAlchemy URL of the study store (default: sqlite in --out; PostgreSQL for many "
                      "machines, e.g. postgresql://user@host/db)."),
    click.option("--sampler", type=_Registry("spaces", "SAMPLERS"), default="gp", show_default=True),
    click.option("--startup", type=int, default=10, show_default=True, help="Random trials before the sampler."),
    click.option("--heartbeat", type=int, default=30, show_default=True,
                 help="Seconds between heartbeats; a worker silent for 2x this is declared dead."),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--epochs", type=int, default=10, show_default=True, help="Epoch cap per trial."),
)


@main.group(cls=_Group)
def tune():
    """Bayesian hyperparameter search (Optuna, GP sampler). Start any number of workers."""


@tune.command("teacher")
@data_option
@device_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run directory (shared by workers).")
@search_options
@split_options
def tune_teacher_cmd(data_path, device, out, trials, storage, sampler, startup, heartbeat, seed, epochs, val_size,
                     train_limit, val_limit):
    """Search the paper teacher's 18 hyperparameters; validation error is the objective."""
    from .device import resolve_device
    from .search import best_trials
    from .teachers import SplitConfig
    from .tuning import SearchConfig, tune_teachers

    sc = SearchConfig(trials, sampler, startup, seed, storage or "", heartbeat)
    study = tune_teachers(_load(data_path), out, sc, epochs, resolve_device(device),
                          SplitConfig(val_size, 0, train_limit, val_limit), log=click.echo)
    _print_study(study, best_trials(study, 5))


@tune.command("student")
@data_option
@device_option
@click.option("--family", required=True)
@click.option("--budget", required=True)
@click.option("--loss", type=_Registry("losses", "LOSSES"), default="mimic", show_default=True)
@click.option("--transfer", "transfer_dir", type=click.Path(path_type=Path), required=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run directory (shared by workers).")
@search_options
@split_options
def tune_student_cmd(data_path, device, family, budget, loss, transfer_dir, out, trials, storage, sampler, startup,
                     heartbeat, seed, epochs, val_size, train_limit, val_limit):
    """Search a student's learning rate, momentum, init/input scale and free widths."""
    from .budget import parse_budget
    from .device import resolve_device
    from .losses import default_grad_clip
    from .search import best_trials
    from .teachers import SplitConfig
    from .train import TrainConfig
    from .transfer import read_manifest
    from .tuning import SearchConfig, tune_students

    read_manifest(transfer_dir)  # before the study is opened: a wrong path writes no failed trials
    sc = SearchConfig(trials, sampler, startup, seed, storage or "", heartbeat)
    study = tune_students(_load(data_path), out, sc, transfer_dir, family, parse_budget(budget), loss,
                          TrainConfig(epochs=epochs, grad_clip=default_grad_clip(loss)), resolve_device(device),
                          SplitConfig(val_size, 0, train_limit, val_limit), log=click.echo)
    _print_study(study, best_trials(study, 5))


def _print_study(study, best) -> None:
    from .search import counts

    c = counts(study)
    click.echo(f"study {study.study_name} ({study.user_attrs.get('sampler_class')}): "
               + ", ".join(f"{n} {s.name.lower()}" for s, n in c.items() if n))
    for t in best:
        click.echo(f"  trial {t.number:>3}  val error {t.value:.4f}  {t.user_attrs.get('spec', '')}")
