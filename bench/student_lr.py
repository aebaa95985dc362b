"""Choose each student loss's learning rate (and clipping), or a family's free widths, on
validation: a small grid of students trained on an existing transfer set, never evaluated on test.

    python bench/student_lr.py --data ../shared/data/cifar10.npz --run runs/quick \\
        --families mlp1,conv1,conv4 --budget 100k --loss mimic --lrs 0.005,0.01,0.02,0.05 --clip 5

    python bench/student_lr.py --data ../shared/data/cifar10.npz --run runs/quick \\
        --families conv2 --budget 100k --lrs 0.02 --free 22,22 --free 32,32

Prints validation accuracy per (family, widths, lr) and the mean over families; writes the table as
JSON next to the students (`--out`). Uses the run's split and transfer set, and the training
settings of `--preset` for everything but the learning rate and clipping.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from shallowmimic.core.device import configure_threads, machine_reference, resolve_device, set_precision
from shallowmimic.core.files import read_json, write_json
from shallowmimic.data.sources import load_dataset
from shallowmimic.data.split import split_tensors
from shallowmimic.distill.students import StudentSetting, train_student
from shallowmimic.models.budget import parse_budget
from shallowmimic.study.config import load_study
from shallowmimic.study.planning import student_train_config
from shallowmimic.training.loop import Diverged


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
    ap.add_argument("--free", action="append", default=None,
                    help="free widths, comma-separated (repeat for a grid; default: the middle of the ranges)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="models per cell (seeds students.seed + 0..N-1, as the study's repeats)")
    ap.add_argument("--out", default="runs/student-lr")
    args = ap.parse_args()
    configure_threads()  # as the CLI does: explicit thread count

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
    frees = [tuple(int(w) for w in f.split(",")) for f in args.free] if args.free else [()]
    table = []
    for family in args.families.split(","):
        for free in frees:
            for lr in (float(v) for v in args.lrs.split(",")):
                for r in range(args.repeats):
                    table.append(_train(args, cfg, ds, data, transfer, device, family, budget, free, lr, clip, r))
    print("\nmean validation accuracy over families:")
    for free in frees:
        for lr in sorted({row["lr"] for row in table}):
            accs = [row["val_acc"] for row in table if row["lr"] == lr and row["free"] == list(free)]
            print(f"  widths {_widths(free):<12} lr {lr:<7g} {100 * sum(accs) / len(accs):6.2f}%")
    tag = "-w" + "_".join(_widths(f) for f in frees) if args.free else ""
    write_json(Path(args.out) / f"grid-{args.loss}-{args.budget}-clip{clip:g}{tag}.json", table)


def _widths(free: tuple) -> str:
    return ",".join(map(str, free)) or "mid-range"


def _train(args, cfg, ds, data, transfer, device, family, budget, free, lr, clip, repeat=0) -> dict:
    tcfg = replace(student_train_config(cfg, args.loss, repeat), lr=lr, grad_clip=clip)
    setting = StudentSetting(family, budget, args.loss, free=free)
    spec = setting.solved(ds.image_size, ds.num_classes).spec
    out = Path(args.out) / (f"{spec}-{args.loss}-lr{lr:g}-clip{clip:g}" + (f"-r{repeat}" if repeat else ""))
    row = {"family": family, "free": list(free), "spec": spec, "loss": args.loss, "lr": lr, "clip": clip,
           "repeat": repeat}
    head = f"{family:6s} {spec:<34s} {args.loss:5s} lr {lr:<7g} clip {clip:<4g}"
    try:
        r = train_student(ds, transfer, setting, tcfg, out, device, cfg.data, progress=False, data=data,
                          evaluate_test=False)
    except Diverged as e:
        print(f"{head} diverged: {e}", flush=True)
        return {**row, "val_acc": 0.0, "diverged": str(e)}
    clipped = [h.get("clipped") for h in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    print(f"{head} val {100 * r['val_acc']:6.2f}%  clipped per epoch {clipped}  {r['wall_s']:.0f}s", flush=True)
    return {**row, "val_acc": r["val_acc"], "clipped": clipped, "wall_s": r["wall_s"]}


if __name__ == "__main__":
    main()
