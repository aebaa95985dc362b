"""What a model costs to run: parameters, FLOPs per image, CPU latency at batch 1 and throughput
at batch 256, in PyTorch and in onnxruntime, for every model of a study (`inference.csv`).

Thread counts are pinned and recorded: batch-1 latency on 1 thread (a serving process per core),
throughput on every core the process may use. Both runtimes compute in fp32 on the exported
graph's input (uint8 images; standardization included), so they are compared like for like.
Models of one architecture (same layers and shapes) are timed once: their cost does not depend on
the weights, and timing is most of the stage.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shallowmimic.core.device import machine_reference
from shallowmimic.core.errors import UserError
from shallowmimic.core.files import atomic_path, read_json, write_json
from shallowmimic.deploy.export import (
    check_path,
    default_path,
    export_onnx,
    failure_path,
    load_deployable,
    session,
    stored_check,
    weights_digest,
)
from shallowmimic.models.flops import inference_flops_per_image

CSV_NAME = "inference.csv"
COLUMNS = ["name", "role", "family", "loss", "params", "mflops", "test_acc",
           "torch_b1_ms", "torch_b1_p90_ms", "torch_b256_ips", "onnx_b1_ms", "onnx_b1_p90_ms", "onnx_b256_ips",
           "onnx_max_abs_diff", "runs", "batch", "latency_threads", "throughput_threads", "machine_reference_gflops",
           "dir", "timed_as"]
OPTIONAL = {"timed_as"}  # absent from tables written before it existed
TIMING = ["mflops", "torch_b1_ms", "torch_b1_p90_ms", "torch_b256_ips", "onnx_b1_ms", "onnx_b1_p90_ms",
          "onnx_b256_ips", "machine_reference_gflops"]


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def time_calls(fn: Callable[[], object], runs: int, warmup: int) -> np.ndarray:
    """Seconds per call, each call timed on its own, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = np.empty(runs)
    for i in range(runs):
        t = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t
    return times


def architecture(model: torch.nn.Module) -> str:
    """What a model's cost depends on: its layers and their shapes, not its weights."""
    shapes = ",".join(f"{n}:{tuple(p.shape)}" for n, p in model.state_dict().items())
    return f"{model}|{shapes}"


@dataclass(frozen=True)
class Export:
    """One model's ONNX export and its check, a job of its own: workers export in parallel, and
    the timing that follows (one job, alone on the machine) reuses the files. A failed check is
    recorded beside the model (`<file>.failed.json`, for these weights) and reported by the
    timing job, so that no worker exports it again."""

    model: Path

    @property
    def path(self) -> Path:
        """The ONNX file."""
        return default_path(self.model)

    @property
    def marker(self) -> Path:
        return failure_path(self.path)

    def done(self) -> bool:
        return stored_check(self.model) is not None or self.failure() is not None

    def failure(self) -> str | None:
        """Why the export of the present weights failed its check, if it did."""
        if not self.marker.exists():
            return None
        failed = read_json(self.marker, "no export failure")
        return failed.get("error") if failed.get("weights") == weights_digest(self.model) else None

    def run(self, images: np.ndarray, labels: np.ndarray) -> str | None:
        """Export and check; returns (and records) why it failed, if it did."""
        try:
            export_onnx(self.model, images, labels)
        except UserError as e:
            write_json(self.marker, {"error": str(e), "weights": weights_digest(self.model)})
            return str(e)
        self.marker.unlink(missing_ok=True)
        return None

    def forget_failure(self) -> bool:
        """Remove a recorded failure (to try again after a fix); whether there was one."""
        if not self.marker.exists():
            return False
        self.marker.unlink()
        return True


def measure(directory: Path, images: np.ndarray, labels: np.ndarray, runs: int = 100, warmup: int = 10,
            batch: int = 256, threads: int | None = None, reference: float | None = None,
            timed: dict[str, dict] | None = None, reuse_export: bool = False) -> dict:
    """One model's row of `inference.csv`. Exports (and checks) its ONNX graph first, unless
    `reuse_export` and an export with its check is there. `timed`: rows measured earlier by
    architecture; a model whose architecture is there takes its timings (dense CPU kernels cost
    the same whatever the weights) and names it in `timed_as`."""
    if runs < 100:
        raise UserError(f"latency needs at least 100 timed runs, got {runs}")
    model, meta = load_deployable(directory)
    check = (stored_check(directory) if reuse_export else None) or \
        export_onnx(directory, images, labels, loaded=(model, meta))
    threads, key = threads or cores(), architecture(model)
    row = {"name": meta["name"], "role": meta["role"], "family": meta["family"], "loss": meta["loss"],
           "params": meta["params"], "test_acc": meta["test_acc"], "onnx_max_abs_diff": check["max_abs_logit_diff"],
           "runs": runs, "batch": batch, "latency_threads": 1, "throughput_threads": threads,
           "dir": str(directory), "timed_as": ""}
    same = (timed or {}).get(key)
    if same is not None:
        return {**row, **{k: same[k] for k in TIMING}, "timed_as": same["dir"]}
    row.update(_time(model, directory, images, runs, warmup, batch, threads))
    row["machine_reference_gflops"] = round(reference or machine_reference(), 1)
    if timed is not None:
        timed[key] = row
    return row


def _time(model, directory: Path, images: np.ndarray, runs: int, warmup: int, batch: int, threads: int) -> dict:
    model = model.to(memory_format=torch.channels_last)  # after the export: PyTorch's fast layout for timing
    one = torch.from_numpy(np.ascontiguousarray(images[:1]))
    many = torch.from_numpy(np.ascontiguousarray(np.resize(images, (batch,) + images.shape[1:])))
    path = default_path(directory)
    lat, thr = session(path, threads=1), session(path, threads=threads)
    before = torch.get_num_threads()
    try:
        with torch.inference_mode():
            # both batch-1 timings first, on 1 thread, before any multi-threaded work can leave
            # spinning threads behind
            torch.set_num_threads(1)
            t_b1 = time_calls(lambda: model(one), runs, warmup)
            o_b1 = time_calls(lambda: lat.run(None, {"images": one.numpy()}), runs, warmup)
            torch.set_num_threads(threads)
            t_bn = time_calls(lambda: model(many), 5, 1)
            o_bn = time_calls(lambda: thr.run(None, {"images": many.numpy()}), 5, 1)
            flops = inference_flops_per_image(model, many[:2])
    finally:
        torch.set_num_threads(before)
    ms = lambda t, q: float(np.quantile(t, q) * 1e3)  # noqa: E731
    return {"mflops": flops / 1e6, "torch_b1_ms": ms(t_b1, 0.5), "torch_b1_p90_ms": ms(t_b1, 0.9),
            "torch_b256_ips": batch / np.median(t_bn), "onnx_b1_ms": ms(o_b1, 0.5), "onnx_b1_p90_ms": ms(o_b1, 0.9),
            "onnx_b256_ips": batch / np.median(o_bn)}


def _reusable(row: dict | None, runs: int, batch: int, threads: int) -> bool:
    """A row measured earlier counts only if measured the same way and its export is still there."""
    if not row:
        return False
    d = Path(row["dir"])
    path = default_path(d)
    same = (row.get("runs"), row.get("batch"), row.get("throughput_threads")) == (runs, batch, threads)
    return same and path.exists() and check_path(path).exists()


def measure_study(dirs: list[Path], images: np.ndarray, labels: np.ndarray, out_csv: Path, progress: bool = True,
                  runs: int = 100, batch: int = 256, on_error: Callable[[Path, UserError], None] | None = None,
                  reuse_export: bool = False) -> list[dict]:
    """Rows for every directory (teachers, students, the ensemble), reusing rows already in
    `out_csv` measured the same way: an interrupted measurement resumes. With `on_error`, a model
    whose export fails its check is reported there and left out instead of stopping.
    `reuse_export`: models exported already (`Export` jobs) are not exported again."""
    from tqdm import tqdm

    if not dirs:
        raise UserError(f"{Path(out_csv).parent}: no finished models to measure")
    threads = cores()
    done = {r["dir"]: r for r in read_inference(out_csv)} if Path(out_csv).exists() else {}
    reference = machine_reference()
    rows: list[dict] = []
    timed: dict[str, dict] = {}  # architecture -> the row that timed it
    for d in tqdm([Path(d) for d in dirs], desc="inference cost", unit="model", disable=not progress):
        row = done.get(str(d))
        if not _reusable(row, runs, batch, threads):
            try:
                row = measure(d, images, labels, runs=runs, batch=batch, threads=threads, reference=reference,
                              timed=timed, reuse_export=reuse_export)
            except UserError as e:
                if on_error is None:
                    raise
                on_error(d, e)
                continue
        rows.append(row)
        kept = {r["dir"] for r in rows}
        write_inference(out_csv, rows + [r for k, r in done.items() if k not in kept])
    write_inference(out_csv, rows)
    return rows


def write_inference(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in COLUMNS})


def read_inference(path: Path) -> list[dict]:
    """Rows of an `inference.csv`, numbers parsed; a malformed file is a one-line error."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or []) and c not in OPTIONAL]
            if missing:
                raise UserError(f"{path}: not an inference table (no column {missing[0]!r})")
            rows = list(reader)
        return [{k: _parse(k, v) for k, v in r.items()} for r in rows]
    except (OSError, ValueError, csv.Error) as e:
        raise UserError(f"{path}: unreadable inference table ({e})") from None


_INTEGER = {"params", "runs", "batch", "latency_threads", "throughput_threads"}
_TEXT = {"name", "role", "family", "loss", "dir", "timed_as"}


def _parse(key: str, value: str | None):
    if key in _TEXT:
        return value
    if value in ("", None):
        return None
    return int(value) if key in _INTEGER else float(value)
