"""The paper's qualitative findings (PROTOCOL section 8), checked on a run's numbers."""

from __future__ import annotations

from dataclasses import dataclass

from .families import STUDENTS


@dataclass(frozen=True)
class Finding:
    number: int
    claim: str
    status: str  # PASS | FAIL | N/A
    evidence: str

    def line(self) -> str:
        return f"{self.status}  {self.number}. {self.claim} -- {self.evidence}"


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def check_findings(mimic: dict, hard: dict, ensemble: dict | None) -> list[Finding]:
    """`mimic`/`hard`: (family, budget) -> {"test_acc": ...}; `ensemble`: the ensemble manifest."""
    found = []
    budgets = sorted({b for _, b in mimic})
    conv = [f for f in STUDENTS if STUDENTS[f].conv_layers > 0]
    mlps = [f for f in STUDENTS if STUDENTS[f].conv_layers == 0]

    # 1. accuracy rises with conv layers at a fixed budget; MLPs far below every CNN
    claim = "At a fixed budget, accuracy rises with the number of conv layers; MLPs are below every CNN"
    ok, ev, checked = True, [], 0
    for b in budgets:
        accs = [(f, mimic[(f, b)]["test_acc"]) for f in conv if (f, b) in mimic]
        mlp = [mimic[(f, b)]["test_acc"] for f in mlps if (f, b) in mimic]
        if len(accs) < 2:
            continue
        checked += 1
        rising = all(a[1] < c[1] for a, c in zip(accs, accs[1:], strict=False))
        below = not mlp or max(mlp) < min(a for _, a in accs)
        ok &= rising and below
        ev.append(f"{b / 1e6:g}M: " + " < ".join(f"{f} {_pct(a)}" for f, a in accs)
                  + ("" if rising else " (not rising)") + (f"; best MLP {_pct(max(mlp))}" if mlp else "")
                  + ("" if below else " (MLP not below)"))
    found.append(Finding(1, claim, ("PASS" if ok else "FAIL") if checked else "N/A",
                         "; ".join(ev) or "needs two conv families at one budget"))

    # 2. conv1 at the largest budget is worse than conv2 at the smallest
    claim = "A 1-conv student at the largest budget is worse than a 2-conv student at the smallest"
    c1 = [b for f, b in mimic if f == "conv1"]
    c2 = [b for f, b in mimic if f == "conv2"]
    if c1 and c2:
        a1, a2 = mimic[("conv1", max(c1))]["test_acc"], mimic[("conv2", min(c2))]["test_acc"]
        found.append(Finding(2, claim, "PASS" if a1 < a2 else "FAIL",
                             f"conv1 @ {max(c1) / 1e6:g}M {_pct(a1)} vs conv2 @ {min(c2) / 1e6:g}M {_pct(a2)}"))
    else:
        found.append(Finding(2, claim, "N/A", "needs conv1 and conv2 students"))

    # 3. mimic beats hard labels for the same architecture
    claim = "Mimic students beat the same architecture trained on hard labels"
    pairs = [(k, mimic[k]["test_acc"], hard[k]["test_acc"]) for k in sorted(hard) if k in mimic]
    if pairs:
        ok = all(m > h for _, m, h in pairs)
        ev = ", ".join(f"{f}@{b / 1e6:g}M {_pct(m)} vs {_pct(h)}" for (f, b), m, h in pairs)
        found.append(Finding(3, claim, "PASS" if ok else "FAIL", ev))
    else:
        found.append(Finding(3, claim, "N/A", "no hard-label twins trained"))

    # 4. the ensemble beats its best member; no student reaches the ensemble
    claim = "The ensemble beats its best member; no student reaches the ensemble"
    if ensemble:
        e, best = ensemble["test_acc"], ensemble["best_member"]["test_acc"]
        top = max((v["test_acc"] for v in mimic.values()), default=0.0)
        ok = e > best and top < e
        found.append(Finding(4, claim, "PASS" if ok else "FAIL",
                             f"ensemble {_pct(e)} vs best member {_pct(best)}; best student {_pct(top)}"))
    else:
        found.append(Finding(4, claim, "N/A", "no ensemble"))
    return found
