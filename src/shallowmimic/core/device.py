"""Device selection and the speed settings: precision (bf16 autocast), channels_last, threads.

Precision and compiling are settings of a context (`compute(precision, compile)`), so that
every forward pass of one piece of work (training, evaluation, labelling the transfer set)
agrees on them without each function passing them on: `run_study` works in its config's
context, the API's training functions take `precision=` and `compile=` (`takes_compute`), and
the CLI sets its command's for the whole process (`set_precision`). `auto` means bf16 on CUDA
and on CPUs with AMX tiles (oneDNN runs bf16 convolutions 2-3x faster there: see `shallowmimic
bench train`), float32 elsewhere.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import re
import time
from collections.abc import Callable, Iterator

import torch

from shallowmimic.core.errors import UserError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
PRECISIONS = ("auto", "fp32", "bf16")
_PRECISION = contextvars.ContextVar("shallowmimic_precision", default="auto")
_COMPILE = contextvars.ContextVar("shallowmimic_compile", default=False)


def check_device(name: str, where: str = "--device") -> str:
    """The name if it is a device this package knows (auto, cpu, cuda or cuda:N), else a
    one-line error; whether CUDA is present is asked only when the device is resolved."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(name)):
        raise UserError(f"{where} {name}: unknown device (choose from {', '.join(DEVICE_CHOICES)})")
    return name


def resolve_device(name: str = "auto") -> torch.device:
    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
        return torch.device(name)
    return torch.device("cpu")


def configure_threads(threads: int = 0) -> int:
    """Set torch's intra-op threads explicitly: `threads`, else $SHALLOWMIMIC_THREADS, else the
    CPUs this process may run on (a container's limit, not the host's core count)."""
    import os


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


def _checked(name: str) -> str:
    if name not in PRECISIONS:
        raise UserError(f"precision {name!r}: choose from {', '.join(PRECISIONS)}")
    return name


def set_precision(name: str) -> str:
    """Set the precision of the current context (an entry point's: the whole command); returns
    what `auto` resolves to (fp32 or bf16)."""
    _PRECISION.set(_checked(name))
    return name if name != "auto" else ("bf16" if torch.cuda.is_available() or cpu_has_amx() else "fp32")


def precision(device: torch.device) -> str:
    if _PRECISION.get() == "auto":
        return "bf16" if device.type == "cuda" or cpu_has_amx() else "fp32"
    return _PRECISION.get()


def set_compile(on: bool) -> None:
    """Train through `torch.compile`d models (see `compiled`) in the current context."""
    _COMPILE.set(bool(on))


@contextlib.contextmanager
def compute(precision: str | None = None, compile: bool | None = None) -> Iterator[None]:
    """Work inside with this precision and compile setting (None: the surrounding one), and
    restore the surrounding ones after, however the block ends."""
    tokens = [(_PRECISION, _PRECISION.set(_checked(precision))) if precision is not None else None,
              (_COMPILE, _COMPILE.set(bool(compile))) if compile is not None else None]
    try:
        yield
    finally:
        for var, token in filter(None, reversed(tokens)):
            var.reset(token)


def own_context(fn: Callable) -> Callable:
    """Run `fn` in a copy of the caller's context: the settings it makes for its work (a study
    sets its config's precision) end with it."""
    @functools.wraps(fn)
    def in_own_context(*args, **kwargs):
        return contextvars.copy_context().run(fn, *args, **kwargs)
    return in_own_context


def takes_compute(fn: Callable) -> Callable:
    """Give `fn` the keyword arguments `precision` ("auto", "fp32" or "bf16") and `compile`,
    under which it runs (`compute`); omitted, the surrounding context's settings hold."""
    @functools.wraps(fn)
    def with_compute(*args, precision: str | None = None, compile: bool | None = None, **kwargs):
        with compute(precision, compile):
            return fn(*args, **kwargs)
    return with_compute


def compiled(model: torch.nn.Module) -> torch.nn.Module:
    """The module to run training steps through: `torch.compile(model)` when compiling is on,
    else the model itself. Off by default: compiling costs tens of seconds per model shape,
    which pays for long runs on a GPU, not for a one-minute student on a CPU."""
    return torch.compile(model) if _COMPILE.get() else model


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


class StageClock:
    """Wall time per stage, each with the machine's reference figure taken just after it: the
    speed of a machine of this kind drifts within a run, not only from day to day."""

    def __init__(self, device: torch.device):
        self.device, self.stages, self._t = device, [], time.perf_counter()

    def lap(self, stage: str) -> None:
        wall = time.perf_counter() - self._t
        self.stages.append({"stage": stage, "wall_s": round(wall, 1),
                            "reference_gflops": round(machine_reference(self.device), 1)})
        self._t = time.perf_counter()  # the reference's own fraction of a second is nobody's

    def line(self) -> str:
        return ", ".join(f"{s['stage']} {s['wall_s'] / 60:.1f} min ({s['reference_gflops']:,.0f})" for s in self.stages)
