"""Where the data comes from: `--data`, then $SHALLOWMIMIC_DATA, then the cache (downloading
the official archive into it when missing)."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from shallowmimic.core.errors import DataError
from shallowmimic.core.files import atomic_path, file_digest
from shallowmimic.data.sources import CIFAR_ARCHIVE, CIFAR_BATCH_DIR

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
ENV_DATA = "SHALLOWMIMIC_DATA"
ENV_CACHE = "SHALLOWMIMIC_CACHE"


def cache_dir() -> Path:
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "shallowmimic"


def download_cifar10(
    directory: str | Path | None = None,
    url: str = CIFAR_URL,
    md5: str = CIFAR_MD5,
    opener: Callable = urllib.request.urlopen,
    progress: bool = True,
) -> Path:
    """Fetch the official archive into `directory`, verify its MD5, write it atomically.

    Skips the download when a file with the right checksum is already there.
    """
    target = Path(directory or cache_dir()) / CIFAR_ARCHIVE
    if target.exists():
        if file_digest(target, "md5") == md5:
            return target
        raise DataError(
            f"{target}: exists but its MD5 does not match {md5}; delete it and download again"
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{target.parent}: cannot create directory ({e.strerror})") from None
    digest = hashlib.md5()
    try:
        with opener(url) as response, atomic_path(target) as tmp, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = tqdm(total=total, unit="B", unit_scale=True, desc=CIFAR_ARCHIVE, disable=not progress)
            while block := response.read(1 << 20):
                out.write(block)
                digest.update(block)
                bar.update(len(block))
            bar.close()
            out.flush()
            if digest.hexdigest() != md5:
                raise DataError(
                    f"{url}: checksum mismatch (MD5 {digest.hexdigest()}, expected {md5}); "
                    "nothing was written"
                )
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
        raise DataError(f"{url}: download failed ({reason})") from None
    return target


def find_cached(directory: Path) -> Path | None:
    for candidate in (directory / CIFAR_BATCH_DIR, directory / CIFAR_ARCHIVE):
        if candidate.exists():
            return candidate
    return None


def resolve_data_path(explicit: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The data source to use, by the documented resolution order."""
    if explicit:
        return Path(explicit)
    if os.environ.get(ENV_DATA):
        return Path(os.environ[ENV_DATA])
    cached = find_cached(cache_dir())
    if cached is not None:
        return cached
    how = (
        "pass --data PATH (an .npz, a cifar-10-python.tar.gz or a cifar-10-batches-py/ directory), "
        f"set {ENV_DATA}, or run `shallowmimic data download`"
    )
    if not download:
        raise DataError(f"no CIFAR-10 data found in {cache_dir()}: {how}")
    try:
        return download_cifar10(cache_dir())
    except DataError as e:
        raise DataError(f"no CIFAR-10 data found and the download failed ({e}): {how}") from None
