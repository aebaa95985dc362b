"""Data sources: the official CIFAR-10 python release (directory or .tar.gz), .npz files and
image folders (`data.folders`).

Every source loads into one `Dataset`: uint8 NHWC images, int64 labels and class names.
Nothing downstream assumes 10 classes or 32 pixels; those come from the data.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import pickle
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shallowmimic.core.errors import DataError

CIFAR_BATCH_DIR = "cifar-10-batches-py"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"
CIFAR_META = "batches.meta"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray  # uint8 (N, H, W, 3)
    y_train: np.ndarray  # int64 (N,)
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str  # the path it was loaded from
    kind: str  # "npz", "cifar-dir", "cifar-tar" or "folder"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[1])

    @functools.cached_property
    def digest(self) -> str:
        """sha256 of what the data is (images, labels, class names), never of where it lies: the
        same file by a relative or an absolute path, moved, cached, or mounted elsewhere on
        another node is the same data, so its jobs are the same jobs."""
        h = hashlib.sha256()
        for a in (self.x_train, self.y_train, self.x_test, self.y_test):
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(memoryview(a).cast("B"))
        h.update("\n".join(self.class_names).encode())
        return h.hexdigest()


def load_dataset(path: str | os.PathLike, image_size: int = 32) -> Dataset:
    """Load any supported source; raise `DataError` (one line) for anything malformed.
    `image_size`: the square size image folders are decoded to (other sources keep theirs)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: permission denied")
    if path.is_dir():
        if (path / CIFAR_BATCH_DIR).is_dir():
            path = path / CIFAR_BATCH_DIR
        elif (path / CIFAR_ARCHIVE).is_file():
            return load_dataset(path / CIFAR_ARCHIVE)
        from shallowmimic.data.folders import is_image_folder, load_image_folder  # it reads this module

        if is_image_folder(path):
            return load_image_folder(path, image_size)
        return _load_cifar_dir(path)
    name = path.name.lower()
    if name.endswith(".npz"):
        return _load_npz(path)
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return _load_cifar_tar(path)
    raise DataError(
        f"{path}: unsupported data file (expected a .npz, a cifar-10-python.tar.gz, "
        f"a {CIFAR_BATCH_DIR}/ directory or an image folder with train/ and test/)"
    )


# --- .npz -------------------------------------------------------------------------------------


def _load_npz(path: Path) -> Dataset:
    arrays, names = load_npz_arrays(path)
    return validated(path, "npz", arrays["x_train"], arrays["y_train"], arrays["x_test"],
                     arrays["y_test"], names)


def load_npz_arrays(path: Path) -> tuple[dict[str, np.ndarray], tuple[str, ...] | None]:
    """The four arrays of an .npz and its class names (None where it has none), unvalidated."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise DataError(
                    f"{path}: missing array(s) {', '.join(missing)} "
                    f"(an .npz needs {', '.join(NPZ_KEYS)})"
                )
            arrays = {k: z[k] for k in NPZ_KEYS}
            names = z["label_names"] if "label_names" in z.files else None
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{path}: not a readable .npz file, corrupt or truncated ({e})") from None
    if names is not None:
        names = tuple(str(n) for n in np.asarray(names).reshape(-1))
    return arrays, names


# --- the official python release ---------------------------------------------------------------


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The official batches are pickles; refuse anything but plain containers and numpy arrays,
    so a malicious file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # any unpickling failure means a corrupt batch
        raise DataError(f"{where}: not a readable CIFAR batch, corrupt or truncated ({e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: not a CIFAR batch (expected a pickled dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _batch_arrays(batch: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    for key in ("data", "labels"):
        if key not in batch:
            raise DataError(f"{where}: CIFAR batch has no '{key}' entry")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    if data.ndim != 2 or data.shape[1] % 3:
        raise DataError(f"{where}: 'data' has shape {data.shape}, expected (N, 3*H*W)")
    side = int(round((data.shape[1] // 3) ** 0.5))
    if 3 * side * side != data.shape[1]:
        raise DataError(f"{where}: 'data' rows of {data.shape[1]} values are not square RGB images")
    # Rows are channel-major (all R, then G, then B); the loader's contract is NHWC.
    images = data.reshape(-1, 3, side, side).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _from_batches(path: Path, kind: str, read) -> Dataset:
    """Assemble a dataset from a `read(member) -> bytes | None` over the release's files."""
    loaded = {}
    for member in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH):
        raw = read(member)
        if raw is None:
            raise DataError(f"{path}: missing CIFAR batch file '{member}'")
        loaded[member] = _batch_arrays(_unpickle(raw, f"{path}:{member}"), f"{path}:{member}")
    names = None
    meta_raw = read(CIFAR_META)
    if meta_raw is not None:
        meta = _unpickle(meta_raw, f"{path}:{CIFAR_META}")
        if "label_names" in meta:
            names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta["label_names"])
    train = [loaded[m] for m in CIFAR_TRAIN_BATCHES]
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    x_test, y_test = loaded[CIFAR_TEST_BATCH]
    return validated(path, kind, x_train, y_train, x_test, y_test, names)


def _load_cifar_dir(path: Path) -> Dataset:
    def read(member: str) -> bytes | None:
        f = path / member
        if not f.is_file():
            return None
        try:
            return f.read_bytes()
        except OSError as e:
            raise DataError(f"{f}: cannot read ({e.strerror})") from None

    return _from_batches(path, "cifar-dir", read)


def _load_cifar_tar(path: Path) -> Dataset:
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}

            def read(member: str) -> bytes | None:
                info = members.get(member)
                if info is None:
                    return None
                f = tar.extractfile(info)
                return None if f is None else f.read()

            return _from_batches(path, "cifar-tar", read)
    except DataError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        # tarfile lists one reason per compression it tried, on lines of their own
        why = "not a tar archive" if "could not be opened" in str(e) else " ".join(str(e).split())
        raise DataError(f"{path}: not a readable .tar.gz archive, corrupt or truncated ({why})") from None


# --- validation --------------------------------------------------------------------------------


def validated(path, kind, x_train, y_train, x_test, y_test, names) -> Dataset:
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.dtype != np.uint8:
            raise DataError(f"{path}: x_{split} has dtype {x.dtype}, expected uint8 pixels")
        if x.ndim != 4 or x.shape[3] != 3 or x.shape[1] != x.shape[2]:
            raise DataError(
                f"{path}: x_{split} has shape {x.shape}, expected (N, H, W, 3) square RGB images"
            )
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(
                f"{path}: y_{split} has shape {y.shape} and dtype {y.dtype}, "
                "expected a 1-D array of integer labels"
            )
        if len(x) != len(y):
            raise DataError(f"{path}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels")
        if len(x) == 0:
            raise DataError(f"{path}: the {split} split is empty")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{path}: train images are {x_train.shape[1:]} but test images are {x_test.shape[1:]}"
        )
    top = int(max(y_train.max(), y_test.max()))
    if names is None:
        names = tuple(f"class_{i}" for i in range(top + 1))
    if len(names) < 2:
        raise DataError(f"{path}: needs at least 2 classes, found {len(names)}")
    if len(set(names)) != len(names):
        raise DataError(f"{path}: label names are not unique: {list(names)}")
    for split, y in (("train", y_train), ("test", y_test)):
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= len(names):
            raise DataError(
                f"{path}: y_{split} has labels in [{lo}, {hi}], outside [0, {len(names) - 1}] "
                f"for {len(names)} classes"
            )
    return Dataset(
        x_train=x_train,
        y_train=y_train.astype(np.int64),
        x_test=x_test,
        y_test=y_test.astype(np.int64),
        class_names=tuple(names),
        source=str(path),
        kind=kind,
    )
