"""The report's training curves: every teacher's, and each student setting's models, per epoch
(from each model's `metrics.jsonl`; `curves.csv` beside it holds the same)."""

from __future__ import annotations

from pathlib import Path

from shallowmimic.models.budget import format_budget
from shallowmimic.report.figure import COLORS, save_figure
from shallowmimic.training.curves import read_curves

NAME = "curves"


def setting_of(row: dict) -> str:
    """A student's setting as the report names it (family@budget loss); teachers: `teacher`."""
    if row["role"] == "teacher":
        return "teacher"
    return f"{row['family']}@{format_budget(row['budget'])} {row['loss']}"


def curves_figure(out: Path, rows: list[dict], title: str = "") -> list[Path]:
    """Training loss and validation accuracy per epoch: teachers on the left, students (one
    colour per family, a line style per loss) on the right. None where no model has curves."""
    curves = [(r, read_curves(Path(r["dir"]))) for r in rows]
    curves = [(r, c) for r, c in curves if c]
    if not curves:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex="col")
    styles = {"mimic": "-", "hard": "--", "kd": ":"}
    labelled: set[str] = set()
    for r, c in curves:
        col = 0 if r["role"] == "teacher" else 1
        name = setting_of(r)
        color = "k" if col == 0 else COLORS.get(r["family"], "gray")
        label = None if name in labelled else name
        labelled.add(name)
        epochs = [h["epoch"] for h in c]
        kw = {"color": color, "ls": "-" if col == 0 else styles.get(r.get("loss"), "-"), "lw": 1, "alpha": 0.8}
        axes[0][col].plot(epochs, [h["train_loss"] for h in c], label=label, **kw)
        measured = [(h["epoch"], 100 * h["val_acc"]) for h in c if h.get("val_acc") is not None]
        if measured:
            axes[1][col].plot(*zip(*measured, strict=True), marker="o", ms=3, **kw)
    for col, who in enumerate(("teachers", "students")):
        axes[0][col].set_title(f"{who}: training loss", fontsize=9)
        axes[1][col].set_title(f"{who}: validation accuracy (%), where measured", fontsize=9)
        axes[1][col].set_xlabel("epoch")
        axes[1][col].xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in (axes[0][col], axes[1][col]):
            ax.grid(alpha=0.2)
    axes[0][1].set_yscale("log")  # mimic (L2 on logits) and hard-label (cross-entropy) losses differ in scale
    if any(r["role"] != "teacher" for r, _ in curves):
        axes[0][1].legend(fontsize=6, ncol=2)
    fig.suptitle(title or "Training curves", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out, NAME)


def section(out: Path, rows: list[dict], title: str = "") -> list[str]:
    """The report's section of training curves (nothing where no model has curves)."""
    if not curves_figure(out, rows, title):
        return []
    return ["## Training curves", "", f"![Training curves]({NAME}.png)", "",
            "Every teacher's and student's training loss per epoch, and its validation accuracy where it was "
            "measured (the fast teachers validate at their last epoch only). Each model's `curves.csv` "
            "holds the figures (also the learning rate, the share of clipped steps and images/s), and its "
            "`tensorboard/` the same as TensorBoard events where tensorboard is installed.", ""]
