"""Options and types shared by the command groups: one-line errors, registry choices read lazily
(so `--help` imports no torch), the data and device options, the split and training options."""

from __future__ import annotations

from pathlib import Path

import click

from shallowmimic.core.errors import UserError


class Group(click.Group):
    """Turns `UserError` anywhere below into click's one-line `Error: ...` and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            raise click.ClickException(str(e)) from None


class FilesOnly(click.Command):
    """A command that reads files only and never imports torch (`status`): it starts at once,
    without the thread setup that every other command gets."""


class Registry(click.Choice):
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


def combined(*opts):
    """One decorator applying several click options, in the order given."""

    def decorate(f):
        for opt in reversed(opts):
            f = opt(f)
        return f

    return decorate


def _keep_image_size(ctx, param, value):
    ctx.meta["image_size"] = value
    return value


def data_option(f):
    f = click.option(
        "--image-size", type=click.IntRange(8, 1024), default=32, show_default=True, expose_value=False,
        callback=_keep_image_size, help="Image folders only: the square size every image is decoded to.",
    )(f)
    return click.option(
        "--data",
        "data_path",
        type=click.Path(path_type=Path),
        default=None,
        help="Data: .npz, cifar-10-python.tar.gz, cifar-10-batches-py/, or an image folder "
        "(DIR/train/<class>/*, DIR/test/<class>/*). "
        "Default: $SHALLOWMIMIC_DATA, then the cache (downloading if needed).",
    )(f)


def _set_precision(ctx, param, value):
    from shallowmimic.core.device import set_precision

    set_precision(value)


def _set_compile(ctx, param, value):
    from shallowmimic.core.device import set_compile

    set_compile(value)


def device_option(f):
    f = click.option(
        "--compile", is_flag=True, expose_value=False, callback=_set_compile,
        help="Train through torch.compile (pays on GPUs for long runs; compiling takes tens of seconds).",
    )(f)
    f = click.option(
        "--precision", type=Registry("core.device", "PRECISIONS"), default="auto", show_default=True,
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
    from shallowmimic.core.device import check_device

    try:
        return check_device(value)
    except UserError as e:
        raise click.BadParameter(str(e).split(": ", 1)[-1]) from None


def load_data(data_path):
    from shallowmimic.data.download import resolve_data_path
    from shallowmimic.data.sources import load_dataset

    ctx = click.get_current_context(silent=True)
    return load_dataset(resolve_data_path(data_path), ctx.meta.get("image_size", 32) if ctx else 32)


split_options = combined(
    click.option("--val-size", type=click.IntRange(min=1), default=10_000, show_default=True,
                 help="Validation images split off the training set."),
    click.option("--train-limit", type=click.IntRange(min=0), default=0, help="Use only N training images (0: all)."),
    click.option("--val-limit", type=click.IntRange(min=0), default=0, help="Use only N validation images (0: all)."),
)


#: Options shared by every command that trains a model.
train_options = combined(
    click.option("--epochs", type=int, default=None, help="Epoch cap."),
    click.option("--batch-size", type=int, default=None),
    click.option("--lr", type=float, default=None, help="Peak / initial learning rate."),
    click.option("--momentum", type=float, default=None, help="Nesterov momentum."),
    click.option("--schedule", type=Registry("training.schedule", "SCHEDULES"), default=None),
    click.option("--seed", type=int, default=0, show_default=True),
    split_options,
    click.option("--resume", is_flag=True, help="Continue the run in --out."),
    click.option("--no-progress", is_flag=True, help="No progress bars."),
)


def cpu():
    import torch

    return torch.device("cpu")


def parse_floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected comma-separated numbers") from None
