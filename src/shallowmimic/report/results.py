"""Collecting the study's results: one row per trained model, and the paper's aggregation
(the mean test accuracy of each setting's best models by validation)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from shallowmimic.core.config import config_hash
from shallowmimic.core.files import atomic_path, write_json
from shallowmimic.core.stats import bootstrap_mean, decode_correct
from shallowmimic.models.result import ModelResult

COLUMNS = ("role", "family", "conv_layers", "budget", "params", "loss", "val_acc", "test_acc",
           "epochs", "wall_s", "device", "config_hash", "spec", "dir")
TOP = 5  # the paper plots the mean of the 5 best models of each setting


def collect(dirs: list[Path]) -> list[dict]:
    rows = []
    for d in dirs:
        if not ModelResult.exists(d):
            continue
        r = ModelResult.load(d)
        more = r.details
        rows.append({
            "role": r.role, "family": r.family, "conv_layers": more.get("conv_layers", ""),
            "budget": more.get("budget", ""), "params": r.params, "loss": more.get("loss", "hard"),
            "val_acc": r.val_acc, "test_acc": r.test_acc, "epochs": r.epochs, "wall_s": r.wall_s,
            "device": r.device, "config_hash": config_hash(more.get("config", {})), "spec": r.spec,
            "dir": str(d),
            # per-test-image correctness: used for the statistics, not written to results.csv
            "correct": decode_correct(more["test_correct"], more["test_n"]) if "test_correct" in more else None,
        })
    return rows


def write_rows(out: Path, rows: list[dict], extra: dict) -> None:
    rows = [{k: r[k] for k in COLUMNS} for r in rows]
    with atomic_path(out / "results.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    write_json(out / "results.json", {"rows": rows, **extra})


def setting_means(rows: list[dict], loss: str) -> dict[tuple[str, int], dict]:
    """(family, budget) -> mean test/val accuracy of the <= 5 best students by validation, with
    their correctness matrix (models x test images) and the accuracy's bootstrap interval."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        if r["role"] == "student" and r["loss"] == loss:
            groups.setdefault((r["family"], int(r["budget"])), []).append(r)
    out = {}
    for key, rs in groups.items():
        best = sorted(rs, key=lambda r: -r["val_acc"])[:TOP]
        out[key] = {"test_acc": sum(r["test_acc"] for r in best) / len(best),
                    "val_acc": sum(r["val_acc"] for r in best) / len(best),
                    "n": len(best), "of": len(rs), "params": sum(r["params"] for r in best) / len(best)}
        if all(r["correct"] is not None for r in best):
            out[key]["correct"] = np.stack([r["correct"] for r in best])
            out[key]["interval"] = bootstrap_mean(out[key]["correct"])
    return out
