"""Accuracy against inference cost: the Pareto frontier of a study's models and the report's
section on it (Figure 2, "fastest model at or above each accuracy level")."""

from __future__ import annotations

from pathlib import Path

from shallowmimic.deploy.export import OPSET

LATENCY = "onnx_b1_ms"  # the x axis: what a deployed model costs per request (onnxruntime, 1 thread)
LEVELS = (50, 60, 65, 70, 75, 80, 85, 90, 95)


def pareto(rows: list[dict], x: str = LATENCY) -> list[dict]:
    """Models no other model beats on both latency and accuracy, fastest first."""
    front, best = [], float("-inf")
    for r in sorted(rows, key=lambda r: (r[x], -r["test_acc"])):
        if r["test_acc"] > best:
            front.append(r)
            best = r["test_acc"]
    return front


def fastest_at_levels(rows: list[dict], levels=LEVELS, x: str = LATENCY) -> list[tuple[float, dict]]:
    """For each accuracy level (%) some model reaches, the fastest model at or above it."""
    out = []
    for level in levels:
        ok = [r for r in rows if r["test_acc"] >= level / 100 - 1e-9]
        if ok:
            out.append((level, min(ok, key=lambda r: r[x])))
    return out


def label(r: dict) -> str:
    if r["role"] == "ensemble":
        return r["family"]
    kind = f"{r['loss'] or 'mimic'} student" if r["role"] == "student" else r["role"]  # mimic, hard or kd
    return f"{r['family']} {kind}, {int(r['params']):,} params"


def section(out: Path, rows: list[dict], title: str = "") -> list[str]:
    """The report's markdown for `inference.csv`'s rows; draws figure2.png/.svg into `out`."""
    from shallowmimic.report.figure import figure2

    rows = [r for r in rows if r.get("test_acc") is not None]
    if not rows:
        return []
    figure2(out, rows, pareto(rows), title=title)
    r0 = rows[0]
    md = ["## Inference cost: accuracy against latency (Figure 2)", "",
          f"Every model exported to ONNX (opset {OPSET}) and checked by onnxruntime against PyTorch (largest logit "
          f"difference {max(r['onnx_max_abs_diff'] for r in rows):.1e}). Latency: batch 1, "
          f"{int(r0['latency_threads'])} thread, median of at least 100 calls; throughput: batch 256 on "
          f"{int(r0['throughput_threads'])} threads; fp32 on the CPU (machine reference "
          f"{r0['machine_reference_gflops']:.0f} GFLOP/s). The ensemble is one point at its real cost "
          "(every member runs)." + (" Models of one architecture (teachers, repeats, hard-label twins) are timed "
          "once and share that timing (column `timed_as` names the model timed); each is exported and checked on "
          "its own."
          if any(r.get("timed_as") for r in rows) else "") + " Table per model: `inference.csv`.", "",
          "![Figure 2](figure2.png)", ""]
    ens = next((r for r in rows if r["role"] == "ensemble"), None)
    students = [r for r in rows if r["role"] == "student"]
    if ens and students:
        best = max(students, key=lambda r: r["test_acc"])
        ratio = ens[LATENCY] / best[LATENCY]
        speed = f"{ratio:.1f}x faster than" if ratio >= 1 else f"{1 / ratio:.1f}x slower than"
        md += [f"The most accurate student, {label(best)}, runs {speed} "
               f"the ensemble ({best[LATENCY]:.2f} vs {ens[LATENCY]:.2f} ms) with {best['mflops']:.1f} vs "
               f"{ens['mflops']:.0f} MFLOP per image, at {100 * (best['test_acc'] - ens['test_acc']):+.2f} points "
               f"of test accuracy ({100 * best['test_acc']:.2f}% vs {100 * ens['test_acc']:.2f}%).", ""]
    table = ["| accuracy at least | fastest model | test % | latency ms (onnxruntime / PyTorch) | "
             "MFLOP/image | images/s at batch 256 (onnxruntime) |", "|---|---|---|---|---|---|"]
    for level, r in fastest_at_levels(rows):
        table.append(f"| {level}% | {label(r)} | {100 * r['test_acc']:.2f} | {r['onnx_b1_ms']:.3f} / "
                     f"{r['torch_b1_ms']:.3f} | {r['mflops']:.1f} | {r['onnx_b256_ips']:,.0f} |")
    return md + ["Fastest model at or above each accuracy level:", ""] + table + [""]
