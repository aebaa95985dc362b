"""Image folders as a data source: `DIR/train/<class>/*` and `DIR/test/<class>/*` (PNG or JPEG),
any number of classes, named after their folders (sorted, the same set in both splits).

Every image is decoded with Pillow once, converted to RGB, center-cropped to a square (the
largest that fits: a non-square image loses the edges of its longer side, never gets stretched)
and resized to `size` x `size` (bicubic; left as it is when already that size), then cached as an
.npz under the cache directory, named by a digest of every file's bytes and path in the folder
and the size. A changed, added or removed file makes a new digest, so the cache never serves
stale images; a second load of the same folder reads the .npz and decodes nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shallowmimic.core.errors import DataError, UserError
from shallowmimic.core.files import atomic_path
from shallowmimic.data.download import cache_dir
from shallowmimic.data.sources import Dataset, load_npz_arrays, validated

SPLITS = ("train", "test")
SUFFIXES = (".png", ".jpg", ".jpeg")
IGNORED = {"thumbs.db", "desktop.ini"}  # what file managers leave beside images


@dataclass(frozen=True)
class ImagesConfig:
    """How an image-folder source is decoded (a study's [images] table; .npz and CIFAR-10 sources
    carry their own size and ignore it)."""

    size: int = 32  # every image becomes size x size pixels

    def __post_init__(self):
        if not 8 <= self.size <= 1024:
            raise UserError(f"images.size must be between 8 and 1024 pixels, got {self.size}")


def is_image_folder(path: Path) -> bool:
    return all((Path(path) / split).is_dir() for split in SPLITS)


def load_image_folder(path: Path, size: int = 32) -> Dataset:
    path = Path(path)
    ImagesConfig(size)  # the range check, for callers outside a study
    files, classes = _listing(path)
    digest = _digest(path, files, size)
    cached = cache_dir() / "image-folders" / f"{digest}.npz"
    if cached.is_file():
        arrays, names = load_npz_arrays(cached)
    else:
        arrays = _decode(path, files, classes, size)
        names = classes
        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cached) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays, label_names=np.array(classes))
    return validated(path, "folder", arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                     tuple(names))


def _listing(path: Path) -> tuple[dict[str, list[tuple[Path, int]]], tuple[str, ...]]:
    """Each split's (file, label) pairs in a fixed order, and the class names."""
    found = {s: sorted(d.name for d in (path / s).iterdir() if d.is_dir() and not d.name.startswith("."))
             for s in SPLITS}
    if not found["train"]:
        raise DataError(f"{path}/train: no class folders (expected train/<class>/*.png or .jpg)")
    if found["train"] != found["test"]:
        raise DataError(f"{path}: train and test have different class folders "
                        f"({', '.join(found['train'])} vs {', '.join(found['test']) or 'none'})")
    classes = tuple(found["train"])
    if len(classes) < 2:
        raise DataError(f"{path}: needs at least 2 class folders, found {len(classes)}")
    files: dict[str, list[tuple[Path, int]]] = {}
    for split in SPLITS:
        files[split] = []
        for label, name in enumerate(classes):
            images = []
            for f in sorted((path / split / name).iterdir()):
                if f.name.startswith(".") or f.name.lower() in IGNORED or f.is_dir():
                    continue
                if f.suffix.lower() not in SUFFIXES:
                    raise DataError(f"{f}: not a PNG or JPEG image (an image folder holds only .png / .jpg files)")
                images.append((f, label))
            if not images:
                raise DataError(f"{path / split / name}: no images")
            files[split] += images
    return files, classes


def _digest(path: Path, files: dict[str, list[tuple[Path, int]]], size: int) -> str:
    h = hashlib.sha256(f"size={size}\n".encode())
    for split in SPLITS:
        for f, label in files[split]:
            h.update(f"{f.relative_to(path)}\t{label}\n".encode())
            try:
                h.update(hashlib.sha256(f.read_bytes()).digest())
            except OSError as e:
                raise DataError(f"{f}: cannot be read ({e.strerror or e})") from None
    return h.hexdigest()[:32]


def _decode(path: Path, files: dict[str, list[tuple[Path, int]]], classes: tuple[str, ...],
            size: int) -> dict[str, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    arrays = {}
    for split in SPLITS:
        x = np.empty((len(files[split]), size, size, 3), np.uint8)
        for i, (f, _) in enumerate(files[split]):
            try:
                with Image.open(f) as img:
                    x[i] = np.asarray(_square(img.convert("RGB"), size))
            except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as e:
                raise DataError(f"{f}: not a readable image ({e})") from None
        arrays[f"x_{split}"] = x
        arrays[f"y_{split}"] = np.array([label for _, label in files[split]], np.int64)
    return arrays


def _square(img, size: int):
    """The largest centered square of `img`, resized to size x size."""
    from PIL import Image

    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    return img if side == size else img.resize((size, size), Image.Resampling.BICUBIC)
