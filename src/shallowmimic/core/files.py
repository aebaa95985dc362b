"""Small file helpers: atomic writes, hashing, and the provenance every run records."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    Readers therefore see either the old file or the complete new one, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600, and so do writers that replace the file themselves (safetensors
        # 0.8); a file made by open() gets 0666 less the umask, and so should this one, or a
        # study directory shared by a group is unreadable to the others
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def create_once(path: str | Path, text: str) -> str:
    """Write `text` to `path` unless it exists, and return what `path` holds: of workers racing
    to create it, the first wins (a hard link never replaces a file) and all read its text."""
    path = Path(path)
    if not path.exists():
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text + "\n")
                os.fchmod(f.fileno(), 0o666 & ~current_umask())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return path.read_text().strip()


def current_umask() -> int:
    """The process umask, read without setting it (os.umask would change it for every thread
    for a moment)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path, missing: str) -> Any:
    """Parse a JSON file; a missing or broken one is a one-line `UserError` (`missing` says what
    the directory should have been)."""
    from shallowmimic.core.errors import UserError

    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path.parent}: {missing} (no {path.name})") from None
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable JSON ({e})") from None


def file_digest(path: str | Path, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.cache
def git_commit() -> str | None:
    """The commit of the source checkout this package runs from, if it is one (read once: the
    code a process runs is the code it imported)."""
    return _git("rev-parse", "HEAD") or None


@functools.cache
def git_dirty() -> bool | None:
    """Whether that checkout's tracked files differed from its commit; None outside a checkout."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def provenance() -> dict[str, Any]:
    """Versions and commit, recorded next to every result so numbers can be traced."""
    import numpy
    import torch

    from shallowmimic import __version__

    return {
        "shallowmimic": __version__,
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,  # the CUDA runtime torch was built with; None on a CPU build
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "numpy": numpy.__version__,
        **{name: _version(name) for name in ("optuna", "onnx", "onnxruntime", "safetensors")},
        "platform": platform.platform(),
        "argv": sys.argv,
    }
