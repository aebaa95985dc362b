"""Shared fixtures: tiny synthetic datasets in every supported format, and the real data file."""

from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

REAL_DATA_ENV = "SHALLOWMIMIC_TEST_DATA"


def tiny_arrays(n_train=50, n_test=10, size=8, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, size, size, 3), dtype=np.uint8),
        "y_train": (np.arange(n_train) % classes).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, size, size, 3), dtype=np.uint8),
        "y_test": (np.arange(n_test) % classes).astype(np.uint8),
        "label_names": np.array([f"c{i}" for i in range(classes)]),
    }


def write_official_batches(arrays: dict, directory: Path) -> Path:
    """Write arrays in the official CIFAR-10 python layout: 5 train batches, a test batch and
    batches.meta, each a protocol-2 pickle with bytes keys and channel-major rows."""
    directory.mkdir(parents=True, exist_ok=True)

    def rows(x):
        return x.transpose(0, 3, 1, 2).reshape(len(x), -1)

    parts = np.array_split(np.arange(len(arrays["x_train"])), 5)
    for i, idx in enumerate(parts, start=1):
        batch = {b"batch_label": b"training batch", b"data": rows(arrays["x_train"][idx]),
                 b"labels": [int(v) for v in arrays["y_train"][idx]]}
        (directory / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    test = {b"data": rows(arrays["x_test"]), b"labels": [int(v) for v in arrays["y_test"]]}
    (directory / "test_batch").write_bytes(pickle.dumps(test, protocol=2))
    meta = {b"label_names": [n.encode() for n in arrays["label_names"]]}
    (directory / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return directory


@pytest.fixture
def tiny():
    return tiny_arrays()


@pytest.fixture
def tiny_npz(tmp_path, tiny):
    path = tmp_path / "tiny.npz"
    np.savez(path, **tiny)
    return path


@pytest.fixture
def tiny_batches(tmp_path, tiny):
    return write_official_batches(tiny, tmp_path / "cifar-10-batches-py")


@pytest.fixture
def tiny_tar(tmp_path, tiny_batches):
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tiny_batches, arcname="cifar-10-batches-py")
    return path


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real CIFAR-10 .npz. In CI it must be there: a missing file fails, never skips."""
    path = os.environ.get(REAL_DATA_ENV)
    if path and Path(path).is_file():
        return Path(path)
    if os.environ.get("CI"):
        pytest.fail(f"CI run without real data: set {REAL_DATA_ENV} to cifar10.npz")
    pytest.skip(f"set {REAL_DATA_ENV} to a CIFAR-10 .npz to run the real-data tests")


@pytest.fixture(autouse=True)
def _fp32_by_default():
    """Unit tests run in float32 unless they ask otherwise (the CLI sets the run's precision)."""
    from shallowmimic.core.device import set_precision

    set_precision("fp32")
    yield
    set_precision("fp32")
