"""The study's report: results.csv/json, report.md/html with the paper's tables side by side,
the qualitative findings, and Figure 1."""

from __future__ import annotations

import html
from pathlib import Path

from shallowmimic.core.files import atomic_path, provenance
from shallowmimic.core.stats import bootstrap_diff, decode_correct
from shallowmimic.deploy.inference import read_inference
from shallowmimic.models.budget import format_budget
from shallowmimic.models.external import FAMILY as EXTERNAL
from shallowmimic.models.students import STUDENTS
from shallowmimic.report import paper
from shallowmimic.report.curves import section as curves_section
from shallowmimic.report.figure import figure1, search_plot
from shallowmimic.report.findings import check_findings
from shallowmimic.report.frontier import section as inference_section
from shallowmimic.report.results import TOP, collect, setting_means, write_rows


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
           ["| " + " | ".join(r) + " |" for r in rows]


def _paper_col(budget: int) -> int | None:
    return paper.BUDGETS.index(budget) if budget in paper.BUDGETS else None


def build_report(out: Path, run: dict) -> dict:
    """`run`: the run record (config, teacher/student dirs, ensemble manifest, notes)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    preset = run.get("preset", "study")
    rows = collect([Path(d) for d in run["teachers"] + run["students"]])
    ensemble = run.get("ensemble")
    mimic, hard = setting_means(rows, "mimic"), setting_means(rows, "hard")
    findings = check_findings(_with_correct(mimic), _with_correct(hard), _ensemble_correct(ensemble))
    write_rows(out, rows, {"ensemble": ensemble, "findings": [f.to_dict() for f in findings],
                           "provenance": provenance()})
    figure1(out, mimic, hard, ensemble, title=f"Figure 1 ({preset} preset)")

    md = _header(run) + _findings_section(findings)
    md += _teachers_section([r for r in rows if r["role"] == "teacher"], ensemble)
    md += _mimic_section(mimic, hard) + _hard_section(mimic, hard)
    md += _search_section(out, run.get("searches") or [])
    md += curves_section(out, rows, title=f"Training curves ({preset} preset)")
    md += compute_section(run)
    cost = out.parent / "inference.csv"  # beside run.json
    if cost.exists():
        md += inference_section(out, read_inference(cost), title=f"Figure 2 ({preset} preset)")
    md += ["## Figure 1", "", "![Figure 1](figure1.png)", "",
           f"Test accuracy against parameters (log scale); each point is the mean of the {TOP} best models "
           "of its setting by validation. Crosses: hard-label models. Horizontal lines: this run's ensemble "
           "and best teacher. Faint: the paper's curves, lines and hard-label points; star: Ba & Caruana.", "",
           "## All models", "", "See `results.csv` / `results.json` (one row per trained model).", ""]
    text = "\n".join(md)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(text)
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(_html(text, preset))
    return {"rows": rows, "findings": findings, "mimic": mimic, "hard": hard, "ensemble": ensemble}


def _header(run: dict) -> list[str]:
    md = [f"# shallowmimic report: {run.get('preset', 'study')}", ""]
    md += [f"Data: `{run.get('data', '?')}`; device {run.get('device', '?')}; "
           f"total wall time {run.get('wall_s', 0) / 60:.1f} min. Accuracies in %; the paper's in parentheses.", ""]
    for note in run.get("notes", []):
        md += [f"> {note}", ""]
    return md + ["## Deviations from the protocol", ""] + [f"- {d}" for d in run.get("deviations", [])] + [""]


def _findings_section(findings) -> list[str]:
    md = ["## Findings (PROTOCOL section 8)", "",
          "Each comparison: difference of test accuracy (points) with its 95% paired-bootstrap interval over "
          "test images (and over seeds where a setting has several models). PASS: every deciding comparison "
          "is significant in the paper's direction; FAIL: some comparison is significantly reversed; "
          "INCONCLUSIVE: neither. Guards (adjacent conv depths) must only not be significantly reversed.", ""]
    for f in findings:
        md.append(f"- **{f.status}** {f.number}. {f.claim}" + ("" if f.comparisons else f": {f.evidence}"))
        md += [f"    - {c.line()}" for c in f.comparisons]
    return md + [""]


def _teachers_section(teachers: list[dict], ensemble: dict | None) -> list[str]:
    external = lambda r: r.get("family") == EXTERNAL  # noqa: E731
    t_rows = [[r["spec"] + (" (external)" if external(r) else ""), f"{r['params']:,}", _pct(r["val_acc"]),
               _pct(r["test_acc"]), "" if external(r) else str(r["epochs"])]
              for r in sorted(teachers, key=lambda r: -r["val_acc"])]
    if ensemble:
        t_rows.append([f"**ensemble of {ensemble['k']}** (of {ensemble['candidates']})", f"{ensemble['params']:,}",
                       _pct(ensemble["val_acc"]), _pct(ensemble["test_acc"]), ""])
    best = paper.BEST_TEACHER
    t_rows.append([f"paper: best teacher {best['spec']}", "5.3M", "", f"({best['test']})", ""])
    t_rows.append(["paper: ensemble of 16", "83.4M", f"({paper.ENSEMBLE['val']})", f"({paper.ENSEMBLE['test']})", ""])
    return ["## Teachers and ensemble", ""] + _table(["teacher", "params", "val", "test", "epochs"], t_rows) + [""]


def _mimic_section(mimic: dict, hard: dict) -> list[str]:
    budgets = sorted({b for _, b in mimic} | {b for _, b in hard})
    md = ["## Students mimicking the ensemble (Table 2 layout, test accuracy)", "",
          f"Each cell: mean of the {TOP} best models of the setting by validation (n = models averaged), "
          "with its 95% bootstrap interval. Paper values are at the paper's budgets.", ""]
    s_rows = []
    for fam in STUDENTS:
        if not any(f == fam for f, _ in mimic):
            continue
        cells = [fam]
        for b in budgets:
            v = mimic.get((fam, b))
            col = _paper_col(b)
            ref = f" ({paper.MIMIC[fam][col]})" if col is not None else ""
            cells.append(f"{_cell(v)}{ref}" if v else "")
        cells.append(" / ".join(str(x) for x in paper.MIMIC[fam]))
        s_rows.append(cells)
    header = ["student"] + [format_budget(b) for b in budgets] + ["paper 1M / 3.16M / 10M / 31.6M"]
    return md + _table(header, s_rows) + [""]


def _hard_section(mimic: dict, hard: dict) -> list[str]:
    h_rows = []
    for (fam, b), h in sorted(hard.items()):
        m = mimic.get((fam, b))
        gap = f"{100 * (m['test_acc'] - h['test_acc']):+.2f}" if m else ""
        if m and "correct" in m and "correct" in h:
            gap = bootstrap_diff(m["correct"], h["correct"]).pct(signed=True)
        p_h = paper.HARD_10M.get(fam)
        p_m = paper.MIMIC[fam][2]
        ref = f"{p_h} / {p_m} / {p_m - p_h:+.2f}" if p_h else ""
        h_rows.append([fam, format_budget(b), _cell(h), _cell(m) if m else "", gap, ref])
    header = ["student", "budget", "hard labels", "mimic", "compression gap", "paper @10M hard / mimic / gap"]
    return ["## Hard labels vs mimic (Table 1 layout, test accuracy)", ""] + _table(header, h_rows) + [""]


def _cell(v: dict) -> str:
    """A setting's mean test accuracy with its bootstrap interval (when correctness is stored) and
    the number of models averaged."""
    return f"{v['interval'].pct() if 'interval' in v else _pct(v['test_acc'])} (n={v['n']})"


def _with_correct(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if "correct" in v}


def _ensemble_correct(manifest: dict | None) -> dict | None:
    """The ensemble and its best member with decoded correctness (None for runs without it)."""
    if not manifest or "test_correct" not in manifest:
        return None
    n = manifest["test_n"]
    best = manifest["best_member"]
    return {"k": manifest["k"], "test_acc": manifest["test_acc"],
            "correct": decode_correct(manifest["test_correct"], n),
            "best_member": {"test_acc": best["test_acc"], "correct": decode_correct(best["test_correct"], n)}}


def _search_section(out: Path, searches: list[dict]) -> list[str]:
    md = ["## Hyperparameter search", ""]
    if not searches:
        return md + ["No search in this run: every model used fixed settings (see the notes above).", ""]
    rows = []
    for s in searches:
        states = [t["state"] for t in s["trials"]]
        best = s.get("best") or {}
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in sorted((best.get("params") or {}).items()))
        rows.append([s["study"], s.get("sampler") or "", str(states.count("COMPLETE")), str(states.count("FAIL")),
                     f"{100 * best['value']:.2f}" if best else "", params])
    md += _table(["study", "sampler", "completed", "failed", "best val error", "best parameters"], rows)
    search_plot(out, searches)
    return md + ["", "![validation error over trials](search.png)", ""]


def compute_section(run: dict) -> list[str]:
    """Each stage's counted compute (the plan's FLOPs) beside its measured wall time and the
    machine's reference figure after it (of the invocation that wrote this run record)."""
    plan = run.get("plan")
    if not plan:
        return []
    walls = {s["stage"]: s for s in run.get("stages", [])}
    rows = []
    for stage, v in plan["stages"].items():
        w = walls.get(stage, {})
        wall = f"{w['wall_s'] / 60:.1f}" if w else ""
        rows.append([stage, str(v["jobs"]), f"{v['flops'] / 1e12:,.2f}", wall,
                     f"{w['reference_gflops']:,.0f}" if w else ""])
    rows.append(["**total**", str(sum(v["jobs"] for v in plan["stages"].values())),
                 f"**{plan['total_flops'] / 1e12:,.1f}**", f"{run.get('wall_s', 0) / 60:.1f}", ""])
    est = plan.get("estimate") or {}
    md = ["## Compute", "",
          "FLOPs counted by PyTorch's FlopCounterMode on each job's model (training: forward + backward per "
          "image x images x epochs; labelling: the ensemble's forward passes; evaluation: validation, test, "
          f"ONNX checks and timing). Precision {run.get('precision', '?')}, {run.get('threads', '?')} thread(s) "
          "per worker; wall times are this record's invocation's (a resumed stage shows only its last part), "
          "each with the machine reference (fp32 matmul GFLOP/s) measured just after the stage.", ""]
    md += _table(["stage", "jobs", "counted TFLOP", "wall min", "reference GFLOP/s"], rows)
    if est:
        md += ["", f"Estimated before the run (from a {est.get('calibration_s', 0):.0f}-second calibration, "
               f"{est.get('workers', 1)} worker(s)): {est.get('total_s', 0) / 60:.1f} min."]
    return md + [""]


def _html(text: str, title: str) -> str:
    """The report's markdown as a self-contained page (Python-Markdown, with tables)."""
    import markdown

    body = markdown.markdown(text, extensions=["tables", "sane_lists"], output_format="html")
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px}th{background:#eee}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{body}</body></html>\n")
