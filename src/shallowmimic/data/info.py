"""`shallowmimic data info`: what a dataset holds and how it is split."""

from __future__ import annotations

import numpy as np

from shallowmimic.core.files import file_digest
from shallowmimic.data.sources import Dataset
from shallowmimic.data.split import make_split


def source_checksum(ds: Dataset) -> str:
    from pathlib import Path

    p = Path(ds.source)
    if p.is_file():
        return "sha256 " + file_digest(p)
    import hashlib

    h = hashlib.sha256()
    for f in sorted(x for x in p.iterdir() if x.is_file()):
        h.update(f.name.encode())
        h.update(bytes.fromhex(file_digest(f)))
    return "sha256 (of the batch files) " + h.hexdigest()


def dataset_info(ds: Dataset, val_size: int = 10_000, split_seed: int = 0) -> str:
    split = make_split(len(ds.x_train), val_size, split_seed)
    k = ds.num_classes
    counts = {
        "train (all)": np.bincount(ds.y_train, minlength=k),
        "train": np.bincount(ds.y_train[split.train], minlength=k),
        "val": np.bincount(ds.y_train[split.val], minlength=k),
        "test": np.bincount(ds.y_test, minlength=k),
    }
    name_w = max(10, *(len(n) for n in ds.class_names))
    lines = [
        f"source:   {ds.source} ({ds.kind})",
        f"checksum: {source_checksum(ds)}",
        f"images:   {len(ds.x_train):,} train / {len(ds.x_test):,} test, "
        f"{ds.image_size}x{ds.image_size} RGB, {k} classes",
        f"split:    {len(split.train):,} train / {len(split.val):,} validation "
        f"(seed {split.seed}, fingerprint {split.fingerprint()})",
        "",
        "class".ljust(name_w) + "".join(h.rjust(13) for h in counts),
    ]
    for c, name in enumerate(ds.class_names):
        lines.append(name.ljust(name_w) + "".join(f"{v[c]:13,d}" for v in counts.values()))
    lines.append("total".ljust(name_w) + "".join(f"{v.sum():13,d}" for v in counts.values()))
    return "\n".join(lines)
