"""`shallowmimic data`: get, inspect and preview the dataset."""

from __future__ import annotations

from pathlib import Path

import click

from shallowmimic.cli.options import Group, data_option, load_data


@click.group(cls=Group)
def data():
    """Get, inspect and preview the dataset."""


@data.command("download")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None,
              help="Target directory (default: the cache, $SHALLOWMIMIC_CACHE).")
@click.option("--url", default=None, help="Mirror URL of cifar-10-python.tar.gz (file:// works).")
def data_download(directory, url):
    """Download the official CIFAR-10 python archive and verify its MD5."""
    from shallowmimic.data.download import CIFAR_URL, download_cifar10

    path = download_cifar10(directory, url=url or CIFAR_URL)
    click.echo(f"CIFAR-10 archive ready: {path}")


@data.command("info")
@data_option
@click.option("--val-size", default=10_000, show_default=True, help="Validation images.")
@click.option("--split-seed", default=0, show_default=True, help="Seed of the train/val split.")
def data_info(data_path, val_size, split_seed):
    """Source, checksum, class counts per split and the train/validation split."""
    from shallowmimic.data.info import dataset_info

    click.echo(dataset_info(load_data(data_path), val_size, split_seed))


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
    from shallowmimic.augment.preview import save_preview
    from shallowmimic.augment.transforms import STUDENT_HSV, TEACHER_HSV

    hsv = STUDENT_HSV if constants == "student" else TEACHER_HSV
    path = save_preview(load_data(data_path), out, hsv, images, augmented, seed)
    click.echo(f"wrote {path}")
