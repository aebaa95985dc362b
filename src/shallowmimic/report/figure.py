"""Figure 1 of the paper: test accuracy against parameters (log x), one line per family."""

from __future__ import annotations

from pathlib import Path

from shallowmimic.core.files import atomic_path
from shallowmimic.models.students import STUDENTS
from shallowmimic.report import paper
from shallowmimic.report.results import TOP

COLORS = {"mlp1": "#9e9ac8", "mlp2": "#807dba", "mlp3": "#6a51a3", "mlp4": "#54278f", "mlp5": "#3f007d",
          "conv1": "#fd8d3c", "conv2": "#e6550d", "conv3": "#31a354", "conv4": "#3182bd"}


def figure1(out: Path, mimic: dict, hard: dict, ensemble: dict | None, title: str = "") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for fam in STUDENTS:
        xs = list(paper.BUDGETS)
        ax.plot(xs, paper.MIMIC[fam], color=COLORS[fam], alpha=0.22, lw=1, ls="--")
        pts = [v for (f, _), v in sorted(mimic.items()) if f == fam]
        if pts:
            ax.errorbar([v["params"] for v in pts], [100 * v["test_acc"] for v in pts], yerr=_yerr(pts),
                        fmt="o-", color=COLORS[fam], label=f"{fam} (mimic)", lw=2, capsize=3)
    for (fam, _), v in sorted(hard.items()):
        ax.errorbar([v["params"]], [100 * v["test_acc"]], yerr=_yerr([v]), fmt="x", color=COLORS[fam], ms=9,
                    mew=2, capsize=3)
    if hard:
        ax.plot([], [], "x", color="k", label="hard labels (same architecture)")
    for fam, acc in paper.HARD_10M.items():
        ax.plot([1e7], [acc], "x", color=COLORS[fam], alpha=0.3)
    if ensemble:
        ax.axhline(100 * ensemble["test_acc"], color="k", lw=1.5, label=f"ensemble of {ensemble['k']}")
        ax.axhline(100 * ensemble["best_member"]["test_acc"], color="k", lw=1, ls=":", label="best teacher")
    ax.axhline(paper.ENSEMBLE["test"], color="k", lw=1, alpha=0.22, ls="--")
    ax.axhline(paper.BEST_TEACHER["test"], color="k", lw=1, alpha=0.22, ls=":")
    ax.plot([paper.BA_CARUANA["params"]], [paper.BA_CARUANA["test"]], "*", color="gray", ms=12,
            label="Ba & Caruana 2014 (paper)")
    ax.plot([], [], ls="--", color="gray", alpha=0.4, label="paper's curves / lines (faint)")
    ax.set_xscale("log")
    ax.set_xlabel("number of parameters")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    ax.set_title(title or "Figure 1: shallow students mimicking a deep ensemble", fontsize=10)
    fig.text(0.01, 0.005, f"Each point: mean test accuracy of the (up to) {TOP} best models of a setting "
             "by validation accuracy; bars: 95% bootstrap interval. Faint: the paper's numbers.", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return save_figure(fig, out, "figure1")


def save_figure(fig, out: Path, name: str) -> list[Path]:
    """PNG and SVG, each written atomically; closes the figure."""
    import matplotlib.pyplot as plt

    paths = []
    for ext in ("png", "svg"):
        path = Path(out) / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=130)
        paths.append(path)
    plt.close(fig)
    return paths


def _yerr(points: list[dict]):
    """Asymmetric error bars (percent) from each point's bootstrap interval, if it has one."""
    if not all("interval" in v for v in points):
        return None
    return [[100 * (v["test_acc"] - v["interval"].lo) for v in points],
            [100 * (v["interval"].hi - v["test_acc"]) for v in points]]


def search_plot(out: Path, searches: list[dict]) -> Path:
    """Validation error of every completed trial against its number, with the running best,
    one panel per study."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(searches)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, s in zip(axes.flat, searches, strict=False):
        done = [t for t in s["trials"] if t["state"] == "COMPLETE"]
        failed = [t["number"] for t in s["trials"] if t["state"] == "FAIL"]
        xs = [t["number"] for t in done]
        ys = [100 * t["value"] for t in done]
        ax.plot(xs, ys, "o", ms=4, label="trial")
        best, run = float("inf"), []
        for y in ys:
            best = min(best, y)
            run.append(best)
        ax.step(xs, run, where="post", color="k", lw=1, label="best so far")
        for f in failed:
            ax.axvline(f, color="r", alpha=0.3, lw=1)
        ax.set_title(s["study"], fontsize=8)
        ax.set_xlabel("trial")
        ax.set_ylabel("validation error (%)")
        ax.grid(alpha=0.2)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(out) / "search.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def figure2(out: Path, rows: list[dict], front: list[dict], title: str = "", x: str = "onnx_b1_ms") -> list[Path]:
    """Test accuracy against batch-1 latency (log x) for every model, the ensemble as one point at
    the cost of all its members, and the Pareto frontier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    groups: dict[str, list[dict]] = {}
    for r in rows:
        key = r["family"] if r["role"] == "student" else r["role"]
        groups.setdefault(key, []).append(r)
    for key, rs in groups.items():
        hard = [r for r in rs if r.get("loss") == "hard"]
        mimic = [r for r in rs if r not in hard]
        style = {"ensemble": dict(marker="*", ms=14, color="k"), "teacher": dict(marker="s", ms=7, color="0.4")}
        kw = style.get(key, dict(marker="o", ms=6, color=COLORS.get(key, "C0")))
        if mimic:  # mimic (or kd) students: the ones trained on the ensemble's logits
            ax.plot([r[x] for r in mimic], [100 * r["test_acc"] for r in mimic], ls="", alpha=0.85,
                    label=key if key in style else f"{key} (on the ensemble's logits)", **kw)
        if hard:
            ax.plot([r[x] for r in hard], [100 * r["test_acc"] for r in hard], ls="", marker="x", mew=2, ms=7,
                    color=kw["color"], alpha=0.85)
    if any(r.get("loss") == "hard" for r in rows):
        ax.plot([], [], "x", color="k", label="hard labels")
    ax.step([r[x] for r in front], [100 * r["test_acc"] for r in front], where="post", color="k", lw=1, alpha=0.6,
            label="Pareto frontier")
    ax.set_xscale("log")
    ax.set_xlabel("latency per image at batch 1 (ms, onnxruntime, 1 CPU thread)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title or "Figure 2: accuracy against inference cost", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out, "figure2")
