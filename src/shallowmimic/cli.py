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


def data_option(f):
    return click.option(
        "--data",
        "data_path",
        type=click.Path(path_type=Path),
        default=None,
        help="CIFAR-10 source: .npz, cifar-10-python.tar.gz or cifar-10-batches-py/. "
        "Default: $SHALLOWMIMIC_DATA, then the cache (downloading if needed).",
    )(f)


def device_option(f):
    return click.option(
        "--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto."
    )(f)


def _load(data_path):
    from .data import load_dataset
    from .download import resolve_data_path

    return load_dataset(resolve_data_path(data_path))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shallowmimic")
def main():
    """Shallow students mimicking deep CNN ensembles on CIFAR-10 (Urban et al., ICLR 2017)."""


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
@click.option("--images", default=8, show_default=True, help="Rows (distinct images).")
@click.option("--augmented", default=7, show_default=True, help="Augmented copies per image.")
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
    from .bench import AUGMENT_COLUMNS, bench_augment, format_table
    from .device import resolve_device

    rows = bench_augment(resolve_device(device), tuple(batches) or (256, 1024, 8192), size)
    click.echo(format_table(rows, AUGMENT_COLUMNS))


