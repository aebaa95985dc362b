"""Throughput benchmarks. Speed claims live here, never in test asserts."""

from __future__ import annotations

import time

import torch

from .augment import STUDENT_HSV, augment


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_augment(
    device: torch.device, batch_sizes=(256, 1024, 8192), size: int = 32, repeats: int = 3
) -> list[dict]:
    """Images/s of the full augmentation (HSV + flip + crop-rescale) on float batches."""
    rows = []
    g = torch.Generator().manual_seed(0)
    for n in batch_sizes:
        x = torch.rand(n, 3, size, size, device=device)
        augment(x, STUDENT_HSV, g)  # warm-up
        _sync(device)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            augment(x, STUDENT_HSV, g)
            _sync(device)
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
