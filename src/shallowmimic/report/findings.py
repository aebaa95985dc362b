"""The paper's qualitative findings (PROTOCOL section 8), each decided by paired-bootstrap
comparisons over test images (and seeds), never by a bare ordering of accuracies.

Every finding is a list of comparisons "A should beat B" with a 95% interval on A - B:
- PASS: every deciding comparison is significantly in the paper's direction and none is
  significantly reversed;
- FAIL: any comparison is significantly reversed;
- INCONCLUSIVE: otherwise (the data cannot tell);
- N/A: the run has no models for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shallowmimic.core.stats import Comparison, compare, verdict
from shallowmimic.models.students import STUDENTS


@dataclass(frozen=True)
class Finding:
    number: int
    claim: str
    status: str  # PASS | FAIL | INCONCLUSIVE | N/A
    evidence: str
    comparisons: tuple[Comparison, ...] = field(default=())

    def line(self) -> str:
        return f"{self.status}  {self.number}. {self.claim} -- {self.evidence}"

    def to_dict(self) -> dict:
        return {"number": self.number, "claim": self.claim, "status": self.status, "evidence": self.evidence,
                "comparisons": [{"better": c.better, "worse": c.worse, "role": c.role, "diff": c.diff.value,
                                 "lo": c.diff.lo, "hi": c.diff.hi} for c in self.comparisons]}


def _finding(number: int, claim: str, comparisons: list[Comparison], missing: str) -> Finding:
    if not comparisons:
        return Finding(number, claim, "N/A", missing)
    return Finding(number, claim, verdict(comparisons), "; ".join(c.line() for c in comparisons),
                   tuple(comparisons))


def _name(family: str, budget: int, loss: str = "") -> str:
    return f"{family}@{budget / 1e6:g}M" + (f" {loss}" if loss else "")


def check_findings(mimic: dict, hard: dict, ensemble: dict | None) -> list[Finding]:
    """`mimic`/`hard`: (family, budget) -> {"test_acc", "correct": (models, images) bool matrix};
    `ensemble`: {"test_acc", "correct", "best_member": {"test_acc", "correct"}} or None."""
    budgets = sorted({b for _, b in mimic})
    conv = [f for f in STUDENTS if STUDENTS[f].conv_layers > 0]
    mlps = [f for f in STUDENTS if STUDENTS[f].conv_layers == 0]
    c = lambda key: mimic[key]["correct"]  # noqa: E731

    # 1. accuracy rises with conv layers at a fixed budget; MLPs far below every CNN. Deciding:
    # each MLP below conv1 and conv1 below the deepest conv family; adjacent depths are guards.
    one = []
    for b in budgets:
        fams = [f for f in conv if (f, b) in mimic]
        if len(fams) < 2:
            continue
        low, deep = fams[0], fams[-1]
        one += [compare(_name(low, b), _name(m, b), c((low, b)), c((m, b))) for m in mlps if (m, b) in mimic]
        one.append(compare(_name(deep, b), _name(low, b), c((deep, b)), c((low, b))))
        one += [compare(_name(h, b), _name(lo, b), c((h, b)), c((lo, b)), role="guard")
                for lo, h in zip(fams, fams[1:], strict=False) if (lo, h) != (low, deep)]
    found = [_finding(1, "At a fixed budget, accuracy rises with the number of conv layers; MLPs are below "
                      "every CNN", one, "needs two conv families at one budget")]

    # 2. conv1 at the largest budget is worse than conv2 at the smallest
    c1 = [b for f, b in mimic if f == "conv1"]
    c2 = [b for f, b in mimic if f == "conv2"]
    two = []
    if c1 and c2:
        b1, b2 = max(c1), min(c2)
        two.append(compare(_name("conv2", b2), _name("conv1", b1), c(("conv2", b2)), c(("conv1", b1))))
    found.append(_finding(2, "A 1-conv student at the largest budget is worse than a 2-conv student at the "
                          "smallest", two, "needs conv1 and conv2 students"))

    # 3. mimic beats hard labels for the same architecture
    three = [compare(_name(f, b, "mimic"), _name(f, b, "hard"), c((f, b)), hard[(f, b)]["correct"])
             for f, b in sorted(hard) if (f, b) in mimic]
    found.append(_finding(3, "Mimic students beat the same architecture trained on hard labels", three,
                          "no hard-label twins trained"))

    # 4. the ensemble beats its best member (chosen on validation); no student reaches the
    # ensemble (compared with the student setting of highest test accuracy: the strictest test)
    four = []
    if ensemble:
        e = ensemble["correct"]
        four.append(compare(f"ensemble of {ensemble.get('k', '?')}", "best member", e,
                            ensemble["best_member"]["correct"]))
        if mimic:
            top = max(mimic, key=lambda k: mimic[k]["test_acc"])
            four.append(compare("ensemble", f"best student ({_name(*top)})", e, c(top)))
    found.append(_finding(4, "The ensemble beats its best member; no student reaches the ensemble", four,
                          "no ensemble"))
    return found
