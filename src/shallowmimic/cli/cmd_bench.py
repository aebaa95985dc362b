"""`shallowmimic bench`: throughput and accuracy-per-time benchmarks, each printing a table with the
machine reference before and after."""

from __future__ import annotations

from pathlib import Path

import click

from shallowmimic.cli.options import Group, cpu, data_option, device_option, load_data
from shallowmimic.core.errors import UserError


@click.group(cls=Group)
def bench():
    """Throughput benchmarks (images/s)."""


@bench.command("augment")
@device_option
@click.option("--batch", "batches", multiple=True, type=int, help="Batch size(s) to time.")
@click.option("--size", default=32, show_default=True, help="Image side in pixels.")
def bench_augment_cmd(device, batches, size):
    """Images/s of the batched augmentation on the chosen device."""
    from shallowmimic.cli.bench import AUGMENT_COLUMNS, bench_augment, format_table, reference_line
    from shallowmimic.core.device import resolve_device

    dev = resolve_device(device)
    click.echo(reference_line(dev))
    rows = bench_augment(dev, tuple(batches) or (256, 1024, 8192), size)
    click.echo(format_table(rows, AUGMENT_COLUMNS))


@bench.command("train")
@device_option
@click.option("--steps", default=5, show_default=True, help="Timed steps per model.")
def bench_train_cmd(device, steps):
    """Training images/s for a few teacher and student sizes."""
    from shallowmimic.cli.bench import TRAIN_COLUMNS, bench_train, format_table, peak_flops, reference_line
    from shallowmimic.core.device import precision, resolve_device

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
    from shallowmimic.cli.bench import INFER_COLUMNS, format_table, reference_line
    from shallowmimic.study.run import measure_inference

    click.echo(reference_line(cpu()))
    rows = measure_inference(run_dir, data_path, runs, batch)
    click.echo(f"threads: batch-1 latency {int(rows[0]['latency_threads'])}, batch-{batch} throughput "
               f"{int(rows[0]['throughput_threads'])}; fp32 on the CPU")
    click.echo(format_table([{k: float("nan") if v is None else v for k, v in r.items()} for r in rows],
                            INFER_COLUMNS))
    click.echo(reference_line(cpu()) + "  (after)")
    click.echo(f"wrote {run_dir}/inference.csv and {run_dir}/report/ (figure2.png/svg)")


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
    from shallowmimic.cli.bench import TEACHER_COLUMNS, bench_teacher, format_table, reference_line
    from shallowmimic.core.device import resolve_device
    from shallowmimic.models.teachers import get_teacher

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
    rows = bench_teacher(load_data(data_path), dev, out, parsed, seed, batch_size=batch_size, lr=lr)
    click.echo(format_table(rows, TEACHER_COLUMNS))
    click.echo(reference_line(dev) + "  (after)")
