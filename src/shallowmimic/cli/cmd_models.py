"""One stage at a time: `arch`, `teacher`, `ensemble`, `transfer` and `student`."""

from __future__ import annotations

from pathlib import Path

import click

from shallowmimic.cli.options import (
    Group,
    Registry,
    data_option,
    device_option,
    load_data,
    parse_floats,
    split_options,
    train_options,
)
from shallowmimic.core.errors import UserError


@click.command("arch")
@click.argument("spec", required=False)
@click.option("--student", "family", default=None, help="Student family (mlp1..mlp5, conv1..conv4).")
@click.option("--budget", default=None, help="Parameter budget for --student, e.g. 1M, 3.16M, 300k.")
@click.option("--widths", default=None,
              help="Free widths (or unit ratios for mlp2..5), comma-separated; default: mid-range.")
@click.option("--teacher", "variant", type=Registry("models.teachers", "TEACHERS", tuple), default=None,
              help="Teacher variant: its default spec.")
@click.option("--size", type=click.IntRange(min=1), default=32, show_default=True, help="Input image side.")
@click.option("--classes", type=click.IntRange(min=2), default=10, show_default=True, help="Number of classes.")
@click.option("--batchnorm", is_flag=True, help="Count batch-norm parameters too.")
def arch_cmd(spec, family, budget, widths, variant, size, classes, batchnorm):
    """Print the layer table and parameter count of SPEC (the paper's notation, e.g.
    76c2-mp-126c2-mp-148c4-mp-1200fc2), or solve a student for a budget."""
    from shallowmimic.cli.arch_text import arch_table, solve_from_cli
    from shallowmimic.models.notation import parse_spec

    if family:
        if spec:
            raise UserError("give either SPEC or --student, not both")
        solved = solve_from_cli(family, budget, widths, size, classes)
        spec = solved.spec
        click.echo(f"{family} at budget {solved.budget:,}: {spec} "
                   f"({solved.params:,} parameters, {100 * (solved.params / solved.budget - 1):+.3f}%)")
    elif variant:
        from shallowmimic.models.teachers import get_teacher

        v = get_teacher(variant)
        spec, batchnorm = v.default_spec, v.options.batchnorm
    if not spec:
        raise UserError("give a SPEC, --student FAMILY --budget B, or --teacher VARIANT")
    click.echo(arch_table(parse_spec(spec), 3, size, classes, batchnorm))


@click.group(cls=Group)
def teacher():
    """Train and evaluate teachers."""


@teacher.command("train")
@data_option
@device_option
@click.option("--variant", type=Registry("models.teachers", "TEACHERS", tuple), default="fast", show_default=True,
              help="Teacher variant: its layers' options and training defaults.")
@click.option("--arch", "spec", default=None, help="Architecture spec (default: the variant's).")
@click.option("--scales", default=None, help="Four width scales C1,C2,C3,H in [0,1] (paper ranges).")
@click.option("--weight-decay", type=float, default=None)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Run directory.")
@train_options
def teacher_train(data_path, device, variant, spec, scales, weight_decay, out, epochs, batch_size, lr,
                  momentum, schedule, seed, val_size, train_limit, val_limit, resume, no_progress):
    """Train one teacher with online augmentation (teacher HSV constants)."""
    from shallowmimic.core.device import resolve_device
    from shallowmimic.data.split import SplitConfig
    from shallowmimic.models.teachers import teacher_spec
    from shallowmimic.training.teachers import teacher_config, train_teacher

    if scales:
        if spec:
            raise UserError("give either --arch or --scales, not both")
        spec = teacher_spec(parse_floats(scales, "--scales"))
    cfg = teacher_config(variant, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                         schedule=schedule, seed=seed, weight_decay=weight_decay)
    r = train_teacher(load_data(data_path), out, variant, spec, cfg, resolve_device(device),
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
    from shallowmimic.core.device import resolve_device
    from shallowmimic.training.teachers import eval_model

    r = eval_model(load_data(data_path), directory, resolve_device(device))
    click.echo(f"{r['spec']} ({r['params']:,} params): val {100 * r['val_acc']:.2f}%  "
               f"test {100 * r['test_acc']:.2f}%")


@click.command("ensemble")
@data_option
@device_option
@click.option("--teachers", "roots", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Directory searched (recursively) for finished teachers; repeatable.")
@click.option("--k", default=16, show_default=True, help="Number of best teachers to average.")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@split_options
def ensemble_cmd(data_path, device, roots, k, out, val_size, train_limit, val_limit):
    """Average the logits of the K best teachers (by validation accuracy); evaluate all."""
    from shallowmimic.core.device import resolve_device
    from shallowmimic.data.split import SplitConfig, split_tensors
    from shallowmimic.distill.ensemble import build_ensemble, find_teachers

    dev = resolve_device(device)
    data = split_tensors(load_data(data_path), SplitConfig(val_size, 0, train_limit, val_limit), dev)
    m = build_ensemble(find_teachers(list(roots)), k, data, out, dev)
    for r in m["members"]:
        click.echo(f"  {r['spec']:<40} val {100 * r['val_acc']:.2f}%  test {100 * r['test_acc']:.2f}%")
    click.echo(f"ensemble of {k} ({m['params']:,} params): val {100 * m['val_acc']:.2f}%  "
               f"test {100 * m['test_acc']:.2f}%  -> {out}")


@click.command("transfer")
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
    from shallowmimic.core.device import resolve_device
    from shallowmimic.data.split import SplitConfig, split_tensors
    from shallowmimic.distill.ensemble import load_ensemble, read_manifest
    from shallowmimic.distill.transfer import TransferConfig, generate

    dev = resolve_device(device)
    data = split_tensors(load_data(data_path), SplitConfig(val_size, 0, train_limit, val_limit), dev)
    if read_manifest(ensemble_dir)["split_fingerprint"] != data.fingerprint:
        raise UserError(f"{ensemble_dir}: the ensemble was evaluated on another train/validation split")
    tcfg = TransferConfig(epochs=epochs, seed=seed, materialize=materialize)
    source = {"ensemble": str(ensemble_dir), "split_fingerprint": data.fingerprint}
    info = generate(load_ensemble(ensemble_dir, dev), data.x_train, tcfg, out, source, progress=not no_progress,
                    rebuild=rebuild)
    click.echo(f"transfer set: {epochs} epochs x {info['images_per_epoch']:,} images: {info['bytes'] / 2**20:.1f} MiB "
               f"stored vs {info['materialized_bytes'] / 2**20:.1f} MiB as images -> {out}")


@click.group(cls=Group)
def student():
    """Train students on a transfer set."""


@student.command("train")
@data_option
@device_option
@click.option("--family", required=True, help="mlp1..mlp5, conv1..conv4.")
@click.option("--budget", required=True, help="Parameter budget, e.g. 1M, 3.16M, 300k.")
@click.option("--widths", default=None, help="Free widths (ratios for mlp2..5); default mid-range.")
@click.option("--loss", type=Registry("training.losses", "LOSSES"), default="mimic", show_default=True)
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
    from shallowmimic.cli.arch_text import parse_free
    from shallowmimic.core.device import resolve_device
    from shallowmimic.data.split import SplitConfig
    from shallowmimic.distill.students import StudentSetting, train_student
    from shallowmimic.models.budget import parse_budget
    from shallowmimic.training.loop import TrainConfig

    setting = StudentSetting(family, parse_budget(budget), loss, parse_free(family, widths), init_scale, input_scale)
    given = dict(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, schedule=schedule)
    from shallowmimic.training.losses import default_grad_clip

    clip = default_grad_clip(loss) if grad_clip is None else grad_clip
    cfg = TrainConfig(loss=loss, seed=seed, grad_clip=clip, kd_temperature=kd_temperature, kd_alpha=kd_alpha,
                      **{k: v for k, v in given.items() if v is not None})
    if (out / "checkpoint.safetensors").exists() and not resume:
        raise UserError(f"{out}: already holds a training run; pass --resume or choose another --out")
    from shallowmimic.distill.transfer import read_manifest

    read_manifest(transfer_dir)
    r = train_student(load_data(data_path), transfer_dir, setting, cfg, out, resolve_device(device),
                      SplitConfig(val_size, 0, train_limit, val_limit), progress=not no_progress)
    click.echo(f"{family} {r['spec']} ({r['params']:,} params, budget {r['budget']:,}) {loss}: "
               f"val {100 * r['val_acc']:.2f}%  test {100 * r['test_acc']:.2f}%  -> {out}")
