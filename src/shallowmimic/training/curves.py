"""A training's curves, written as each epoch ends so they can be watched while it runs: one
line per epoch in `metrics.jsonl` (what the report reads), the same as `curves.csv` (for a
spreadsheet or pandas), and TensorBoard event files in `tensorboard/` when the `tensorboard`
package is installed (`pip install "shallowmimic[tensorboard]"`; then `tensorboard --logdir RUN`)."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

from shallowmimic.core.files import atomic_path
from shallowmimic.core.layout import CURVES_CSV, METRICS, TENSORBOARD_DIR

#: An epoch's figures: its training loss, validation accuracy (None where not measured), learning
#: rate, the share of steps whose gradient was clipped (None without clipping), speed and time.
COLUMNS = ("epoch", "train_loss", "val_acc", "lr", "clipped", "images_per_s", "train_s")


def write_curves(out: Path, history: list[dict]) -> None:
    """Every epoch so far, as JSON lines and as CSV (each file replaced whole, atomically)."""
    with atomic_path(out / METRICS) as tmp:
        tmp.write_text("".join(json.dumps(h) + "\n" for h in history))
    with atomic_path(out / CURVES_CSV) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows({k: ("" if h.get(k) is None else h[k]) for k in COLUMNS} for h in history)


def read_curves(directory: Path) -> list[dict]:
    """A model's epochs as written (none for a model without curves, e.g. one trained elsewhere)."""
    path = Path(directory) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def tensorboard_installed() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def _summary_writer():
    """torch's SummaryWriter, or None where tensorboard is missing or will not import."""
    if not tensorboard_installed():
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # installed but broken: the CSV still holds every figure
        return None
    return SummaryWriter


class TensorBoard:
    """Scalars per epoch into `out/tensorboard/`, or nothing where tensorboard is not installed.
    A resumed training purges the events after its checkpoint's epoch (a killed run may have
    logged an epoch its checkpoint does not hold), so every step is logged once."""

    def __init__(self, out: Path, resumed_at: int):
        writer = _summary_writer()  # an append-only event log: the one output not written by rename
        self.writer = writer(str(Path(out) / TENSORBOARD_DIR), purge_step=resumed_at + 1) if writer else None

    def epoch(self, record: dict) -> None:
        if self.writer is None:
            return
        for key in COLUMNS[1:]:
            if record.get(key) is not None:
                self.writer.add_scalar(key, record[key], record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
