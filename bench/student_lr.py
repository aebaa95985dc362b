"""Choose each student loss's learning rate (and clipping) on validation: a small grid of
students trained on an existing transfer set, never evaluated on test.

    python bench/student_lr.py --data ../shared/data/cifar10.npz --run runs/quick \\
        --families mlp1,conv1,conv4 --budget 100k --loss mimic --lrs 0.005,0.01,0.02,0.05 --clip 5

Prints validation accuracy per (family, lr) and the mean over families; writes the table as
JSON next to the students (`--out`). Uses the run's split and transfer set, and the training
settings of `--preset` for everything but the learning rate and clipping.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from shallowmimic.budget import parse_budget
from shallowmimic.data import load_dataset
from shallowmimic.device import machine_reference, resolve_device, set_precision
from shallowmimic.io import read_json, write_json
from shallowmimic.pipeline import student_train_config
from shallowmimic.students import StudentSetting, train_student
from shallowmimic.study import load_study
from shallowmimic.teachers import split_tensors
from shallowmimic.train import Diverged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--run", required=True, help="a study directory with a finished transfer set")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--families", default="mlp1,conv1,conv4")
    ap.add_argument("--budget", default="100k")
    ap.add_argument("--loss", default="mimic", choices=["mimic", "hard", "kd"])
    ap.add_argument("--lrs", default="0.005,0.01,0.02,0.05")
    ap.add_argument("--clip", type=float, default=None, help="gradient clipping (default: the preset's)")
    ap.add_argument("--out", default="runs/student-lr")
    args = ap.parse_args()

    cfg = load_study(args.preset)
    set_precision(cfg.precision)
    device = resolve_device(cfg.device)
    ds = load_dataset(Path(args.data))
    data = split_tensors(ds, cfg.data, device)
    run = read_json(Path(args.run) / "run.json", "not a study directory")
    transfer = Path(run["transfer"])
    budget = parse_budget(args.budget)
    clip = cfg.students.grad_clip[args.loss] if args.clip is None else args.clip
    print(f"machine reference: {machine_reference(device):,.0f} GFLOP/s; transfer set {transfer}", flush=True)
    table = []
    for family in args.families.split(","):
        for lr in (float(v) for v in args.lrs.split(",")):
            tcfg = replace(student_train_config(cfg, args.loss, 0), lr=lr, grad_clip=clip)
            out = Path(args.out) / f"{family}-{args.budget}-{args.loss}-lr{lr:g}-clip{clip:g}"
            try:
                r = train_student(ds, transfer, StudentSetting(family, budget, args.loss), tcfg, out, device,
                                  cfg.data, progress=False, data=data, evaluate_test=False)
            except Diverged as e:
                print(f"{family:6s} {args.loss:5s} lr {lr:<7g} clip {clip:<4g} diverged: {e}", flush=True)
                table.append({"family": family, "loss": args.loss, "lr": lr, "clip": clip, "val_acc": 0.0,
                              "diverged": str(e)})
                continue
            clipped = [h.get("clipped") for h in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
            table.append({"family": family, "loss": args.loss, "lr": lr, "clip": clip, "val_acc": r["val_acc"],
                          "clipped": clipped, "wall_s": r["wall_s"]})
            print(f"{family:6s} {args.loss:5s} lr {lr:<7g} clip {clip:<4g} val {100 * r['val_acc']:6.2f}%  "
                  f"clipped per epoch {clipped}  {r['wall_s']:.0f}s", flush=True)
    lrs = sorted({row["lr"] for row in table})
    print("\nmean validation accuracy over families:")
    for lr in lrs:
        accs = [row["val_acc"] for row in table if row["lr"] == lr]
        print(f"  lr {lr:<7g} {100 * sum(accs) / len(accs):6.2f}%")
    write_json(Path(args.out) / f"grid-{args.loss}-{args.budget}-clip{clip:g}.json", table)


if __name__ == "__main__":
    main()
