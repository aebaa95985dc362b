"""Device selection and the speed settings: precision (bf16 autocast), channels_last, threads.

Precision is a process-wide setting (`set_precision`), chosen once by the entry point from
the run's config, because every forward pass (training, evaluation, labelling the transfer
set) must agree on it. `auto` means bf16 on CUDA and on CPUs with AMX tiles (oneDNN runs bf16
convolutions 2-3x faster there: see `shallowmimic bench train`), float32 elsewhere.
"""

from __future__ import annotations

import contextlib
import functools
import time

import torch

from .errors import UserError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
_precision = "auto"  # entry points call set_precision with the run's choice


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise UserError(f"--device {name}: unknown device (choose from {', '.join(DEVICE_CHOICES)})")


def configure_threads(threads: int = 0) -> int:
    """Set torch's intra-op threads explicitly: `threads`, else $SHALLOWMIMIC_THREADS, else the
    CPUs this process may run on (a container's limit, not the host's core count).

    It also flushes denormal floats to zero. GELU's erf underflows into denormals for large
    activations (trained teachers have many), and x86 CPUs compute those 10-100x slower: GELU
    took 3x longer on a teacher's real activations than on random ones. The flag is per thread
    and worker threads copy it when they start, so call this before torch's first parallel op."""
    import os

    torch.set_flush_denormal(True)

    if not threads:
        env = os.environ.get("SHALLOWMIMIC_THREADS", "")
        if env and not env.isdigit():
            raise UserError(f"SHALLOWMIMIC_THREADS={env!r}: expected a whole number")
        threads = int(env or 0)
    if not threads and hasattr(os, "sched_getaffinity"):
        threads = len(os.sched_getaffinity(0))
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads


@functools.cache
def cpu_has_amx() -> bool:
    """Read once per process: `autocast` asks on every training step."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and "amx_bf16" in line.split() for line in f)
    except OSError:
        return False


def set_precision(name: str) -> str:
    """Set the process-wide precision; returns what `auto` resolved to (fp32 or bf16)."""
    global _precision
    if name not in PRECISIONS:
        raise UserError(f"precision {name!r}: choose from {', '.join(PRECISIONS)}")
    _precision = name
    return name if name != "auto" else ("bf16" if torch.cuda.is_available() or cpu_has_amx() else "fp32")


def precision(device: torch.device) -> str:
    if _precision == "auto":
        return "bf16" if device.type == "cuda" or cpu_has_amx() else "fp32"
    return _precision


def autocast(device: torch.device):
    """bf16 autocast where the precision says so, else full float32. Either way a CPU run is
    repeatable on the same machine (same seed, same numbers)."""
    if precision(device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last: faster convolutions with cuDNN and with oneDNN on CPUs alike (measured
    1.3-1.6x for the fast teacher on a 2-core CPU)."""
    return torch.channels_last


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine_reference(device: torch.device | None = None, n: int = 1024, repeats: int = 5) -> float:
    """fp32 matmul GFLOP/s at this moment: the figure that makes wall times comparable across
    machines of one kind, which differ by 2x from day to day. Best of `repeats`."""
    device = device or torch.device("cpu")
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9
