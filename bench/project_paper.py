"""Project the `paper` preset's compute from FLOP counts: an estimate, not a measurement.

    python bench/project_paper.py [--of-peak 0.05,0.2] [--epochs-fraction 0.5]

Counts training FLOPs per image (forward + backward, PyTorch's FlopCounterMode) of a paper
teacher and of every student setting (free widths at the middle of the paper's ranges), then
multiplies by the preset's counts: teacher trials x epochs x training images, students (mimic
searches and hard-label twins) likewise, and the transfer set's labelling (forward passes of
the ensemble's members over every transfer epoch). The preset's epochs are caps (the plateau
schedule stops earlier); `--epochs-fraction` scales them. GPU-hours follow from an assumed
achieved fraction of an H200's bf16 dense peak (about 989 TFLOP/s); small convnets at batch
128 reach a small fraction of it, which `bench train` measures on the device.
"""

from __future__ import annotations

import argparse

from shallowmimic.models.budget import parse_budget
from shallowmimic.models.flops import train_flops_per_image
from shallowmimic.models.notation import parse_spec
from shallowmimic.models.solve import solve_student
from shallowmimic.models.store import ModelSpec
from shallowmimic.models.students import STUDENT_OPTIONS, STUDENTS, default_free
from shallowmimic.models.teachers import get_teacher
from shallowmimic.study.config import load_study

H200_BF16_PEAK = 989e12


def per_image(spec: str, options) -> float:
    model = ModelSpec("bench", "x", str(parse_spec(spec)), options, 3, 32, 10).build("cpu")
    return train_flops_per_image(model, 3, 32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--of-peak", default="0.05,0.2", help="assumed achieved fractions of the bf16 peak")
    ap.add_argument("--epochs-fraction", type=float, default=1.0, help="epochs run / the preset's cap")
    args = ap.parse_args()
    cfg = load_study("paper")
    n_train = 50_000 - cfg.data.val_size
    teacher = get_teacher(cfg.teachers.variant)
    t_flops = sum(per_image(s, teacher.options) for s in cfg.teachers.specs) / len(cfg.teachers.specs)
    rows = []
    epochs = cfg.teachers.epochs * args.epochs_fraction
    trials = cfg.search.teacher_trials or cfg.teachers.count
    rows.append(("teachers", f"{trials} x {epochs:g} epochs", t_flops, trials * epochs * n_train * t_flops))
    # labelling: one forward pass (about a third of a training step) per member per transfer image
    label = cfg.ensemble.k * cfg.transfer.epochs * n_train * t_flops / 3
    rows.append(("transfer set labelling", f"{cfg.ensemble.k} members x {cfg.transfer.epochs} epochs", t_flops / 3,
                 label))
    s = cfg.students
    s_epochs = s.epochs * args.epochs_fraction
    settings = [(f, b, "mimic") for b in s.budgets for f in s.families]
    settings += [(f, b, "hard") for b in s.hard_budgets for f in s.hard_families]
    for fam, b, loss in settings:
        n = cfg.search.student_trials or s.models_per_setting(loss)
        budget = parse_budget(b)
        solved = solve_student(STUDENTS[fam], budget, default_free(STUDENTS[fam], budget))
        f = per_image(solved.spec, STUDENT_OPTIONS)
        rows.append((f"{fam}@{b} {loss}", f"{n} x {s_epochs:g} epochs", f, n * s_epochs * n_train * f))
    total = sum(r[3] for r in rows)
    print(f"{'part':<24} {'runs':<26} {'GFLOP/img':>10} {'PFLOP':>10}")
    for name, runs, f, tot in rows:
        print(f"{name:<24} {runs:<26} {f / 1e9:>10.3f} {tot / 1e15:>10.1f}")
    print(f"{'total':<24} {'':<26} {'':>10} {total / 1e15:>10.1f}")
    for frac in (float(v) for v in args.of_peak.split(",")):
        print(f"at {frac:.0%} of an H200's bf16 peak: {total / (frac * H200_BF16_PEAK) / 3600:,.0f} GPU-hours")


if __name__ == "__main__":
    main()
