"""Throughput benchmarks. Speed claims live here, never in test asserts."""

from __future__ import annotations

import time

import torch

from shallowmimic.augment.transforms import STUDENT_HSV, augment
from shallowmimic.core.device import machine_reference, sync
from shallowmimic.models.flops import train_flops_per_image


def reference_line(device: torch.device) -> str:
    return (f"machine reference: {machine_reference(device):,.0f} GFLOP/s (fp32 {1024}x{1024} matmul on {device}, "
            f"{torch.get_num_threads()} threads)")


def bench_augment(
    device: torch.device, batch_sizes=(256, 1024, 8192), size: int = 32, repeats: int = 3
) -> list[dict]:
    """Images/s of the full augmentation (HSV + flip + crop-rescale) on float batches."""
    rows = []
    g = torch.Generator().manual_seed(0)
    for n in batch_sizes:
        x = torch.rand(n, 3, size, size, device=device)
        augment(x, STUDENT_HSV, g)  # warm-up
        sync(device)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            augment(x, STUDENT_HSV, g)
            sync(device)
            best = min(best, time.perf_counter() - t)
        rows.append({"device": str(device), "batch": n, "size": size, "images_per_s": n / best})
    return rows


AUGMENT_COLUMNS = [("device", "device", ""), ("batch", "batch", "d"), ("size", "size", "d"),
                   ("images_per_s", "images/s", ",.0f")]


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Plain-text table; `columns` are (key, header, format spec)."""
    cells = [[format(r[k], f) for k, _, f in columns] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h, _) in enumerate(columns)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths, strict=True))  # noqa: E731
    return "\n".join([line([h for _, h, _ in columns]), line(["-" * w for w in widths])]
                     + [line(c) for c in cells])


TRAIN_COLUMNS = [("device", "device", ""), ("precision", "precision", ""), ("model", "model", ""),
                 ("params", "params", ",d"), ("batch", "batch", "d"), ("images_per_s", "train images/s", ",.0f"),
                 ("train_mflop", "MFLOP/img (fwd+bwd)", ",.1f"), ("achieved_gflops", "achieved GFLOP/s", ",.0f"),
                 ("of_peak", "of peak", ".1%")]

#: Dense tensor-core peaks (FLOP/s) by GPU name and precision, from the vendors' data sheets.
GPU_PEAKS = {"H200": {"bf16": 989e12, "fp32": 67e12}, "H100": {"bf16": 989e12, "fp32": 67e12},
             "A100": {"bf16": 312e12, "fp32": 19.5e12}}


def peak_flops(device: torch.device, prec: str) -> tuple[float, str]:
    """The device's peak FLOP/s at `prec` and where the figure comes from. A CPU's peak is not
    known here, so its measured fp32 matmul figure (the machine reference) stands in."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peaks in GPU_PEAKS.items():
            if key in name:
                return peaks[prec], f"{key} data sheet, {prec}"
    return machine_reference(device) * 1e9, "measured fp32 matmul (machine reference)"


def bench_train(device: torch.device, steps: int = 5, batch: int = 128) -> list[dict]:
    """Training throughput (forward + backward + SGD step on augmented, standardized batches)
    for the teacher variants and a few students."""
    from shallowmimic.augment.transforms import STUDENT_HSV
    from shallowmimic.core.device import autocast, memory_format, precision
    from shallowmimic.models.notation import parse_spec
    from shallowmimic.models.solve import solve_student
    from shallowmimic.models.store import ModelSpec
    from shallowmimic.models.students import STUDENT_OPTIONS, STUDENTS, default_free
    from shallowmimic.models.teachers import TEACHERS
    from shallowmimic.training.batches import AugmentedBatches

    models = [(f"teacher-{v.name}", v.default_spec, v.options) for v in TEACHERS.values()]
    students = [("mlp1", 1_000_000), ("conv1", 1_000_000), ("conv4", 1_000_000), ("conv4", 300_000)]
    students += [(f, 100_000) for f in ("mlp1", "conv1", "conv2", "conv3", "conv4")]  # the quick preset's
    for fam, budget in students:
        s = solve_student(STUDENTS[fam], budget, default_free(STUDENTS[fam], budget))
        models.append((f"{fam}@{budget / 1e6:g}M", s.spec, STUDENT_OPTIONS))
    peak, _ = peak_flops(device, precision(device))
    images = torch.randint(0, 256, (batch * (steps + 1), 32, 32, 3), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (len(images),), device=device)
    rows = []
    for name, spec, options in models:
        mspec = ModelSpec("bench", name, str(parse_spec(spec)), options, 3, 32, 10)
        model = mspec.build(device).to(memory_format=memory_format(device))
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        it = AugmentedBatches(images, labels, STUDENT_HSV, batch, 0).epoch(0)
        t = None
        for i, (x, y, _) in enumerate(it):
            if i == 1:  # the first step is warm-up
                sync(device)
                t = time.perf_counter()
            with autocast(device):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sync(device)
        ips = batch * steps / (time.perf_counter() - t)
        flops = train_flops_per_image(model, 3, 32)
        rows.append({"device": str(device), "precision": precision(device), "model": name, "params": mspec.params,
                     "batch": batch, "images_per_s": ips, "train_mflop": flops / 1e6,
                     "achieved_gflops": ips * flops / 1e9, "of_peak": ips * flops / peak})
    return rows


INFER_COLUMNS = [("name", "model", ""), ("params", "params", ",.0f"), ("mflops", "MFLOP/img", ",.2f"),
                 ("test_acc", "test", ".2%"), ("torch_b1_ms", "torch b1 ms", ".3f"),
                 ("torch_b1_p90_ms", "p90", ".3f"), ("onnx_b1_ms", "onnx b1 ms", ".3f"),
                 ("onnx_b1_p90_ms", "p90", ".3f"), ("torch_b256_ips", "torch img/s", ",.0f"),
                 ("onnx_b256_ips", "onnx img/s", ",.0f")]

TEACHER_COLUMNS = [("variant", "teacher", ""), ("spec", "spec", ""), ("params", "params", ",d"),
                   ("epochs", "epochs", "d"), ("batch", "batch", "d"), ("lr", "lr", "g"),
                   ("train_s", "train s", ".0f"), ("tta", "test-time aug.", ""),
                   ("val_acc", "val %", ".2f"),
                   ("test_acc", "test %", ".2f")]


def bench_teacher(ds, device: torch.device, out, runs: list[tuple[str, int]], seed: int = 0,
                  batch_size: int | None = None, lr: float | None = None) -> list[dict]:
    """Train teachers on the 40k split and report test accuracy against training wall time
    (validation and test evaluation excluded). `runs`: (variant, epochs) pairs; `batch_size`,
    `lr`: overrides of the variants' defaults for every run."""
    import json
    from pathlib import Path

    from shallowmimic.core.layout import METRICS
    from shallowmimic.data.split import SplitConfig, split_tensors
    from shallowmimic.models.layers import TTA_MODES, with_tta
    from shallowmimic.models.store import load_model
    from shallowmimic.training.batches import evaluate
    from shallowmimic.training.teachers import teacher_config, train_teacher

    data = split_tensors(ds, SplitConfig(), device)
    rows = []
    for variant, epochs in runs:
        cfg = teacher_config(variant, epochs=epochs, seed=seed, batch_size=batch_size, lr=lr)
        default = teacher_config(variant, epochs=epochs, seed=seed)
        overridden = f"-b{cfg.batch_size}-lr{cfg.lr:g}" if cfg != default else ""  # else the older name
        d = Path(out) / f"{variant}-{epochs}ep{overridden}-s{seed}"
        r = train_teacher(ds, d, variant, None, cfg, device, data=data, progress=True)
        history = [json.loads(line) for line in (d / METRICS).read_text().splitlines()]
        row = {"variant": variant, "spec": r["spec"], "params": r["params"], "epochs": epochs,
               "batch": cfg.batch_size, "lr": cfg.lr,
               "train_s": sum(h["train_s"] for h in history)}
        # the same weights under each test-time augmentation (evaluation only, no retraining)
        model, meta = load_model(d, device)
        for tta in TTA_MODES:
            m = with_tta(model, tta).eval()
            rows.append({**row, "tta": tta + (" (variant's)" if tta == meta["options"]["tta"] else ""),
                         "val_acc": 100 * evaluate(m, data.x_val, data.y_val),
                         "test_acc": 100 * evaluate(m, data.x_test, data.y_test)})
    return rows
