"""Ablation of the fast teacher recipe: each row removes one ingredient (or changes one
setting) and reports test accuracy and training wall time on the 40k split. The last rows
evaluate the full recipe's model with each test-time augmentation.

    python bench/teacher_ablation.py --data ../shared/data/cifar10.npz --epochs 4 [--only full,no-whiten]

Ablated recipes are registered as teacher variants derived from `fast` with
`dataclasses.replace`: variants are data, so an ablation is one line.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from shallowmimic.cli.bench import TEACHER_COLUMNS, format_table
from shallowmimic.core.device import configure_threads, machine_reference, resolve_device, set_precision
from shallowmimic.core.layout import METRICS
from shallowmimic.data.sources import load_dataset
from shallowmimic.data.split import SplitConfig, split_tensors
from shallowmimic.models.layers import with_tta
from shallowmimic.models.store import load_model
from shallowmimic.models.teachers import TEACHERS
from shallowmimic.training.teachers import teacher_config, train_teacher

FAST = TEACHERS["fast"]
ABLATIONS = {
    "full": FAST,
    "no-whiten": replace(FAST, default_spec=FAST.default_spec.replace("24w@2-", "")),
    "no-dirac": replace(FAST, options=replace(FAST.options, dirac_init=False)),
    "no-bias-lr": replace(FAST, recipe=replace(FAST.recipe, bias_lr_scale=1.0)),
    "no-lookahead": replace(FAST, recipe=replace(FAST.recipe, lookahead=False)),
    "no-alt-flip": replace(FAST, alternating_flip=False),
    "no-smoothing": replace(FAST, recipe=replace(FAST.recipe, label_smoothing=0.0)),
    "relu": replace(FAST, options=replace(FAST.options, activation="relu")),
    "fp32": FAST,  # trained with --precision fp32 below
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--only", default="", help="comma-separated rows (default: all)")
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()
    configure_threads()  # as the CLI does: explicit thread count
    device = resolve_device("cpu")
    ds = load_dataset(Path(args.data))
    data = split_tensors(ds, SplitConfig(), device)
    rows = []
    names = args.only.split(",") if args.only else list(ABLATIONS)
    print(f"machine reference: {machine_reference(device):,.0f} GFLOP/s (fp32 matmul)", flush=True)
    for name in names:
        used = set_precision("fp32" if name == "fp32" else args.precision)
        variant = replace(ABLATIONS[name], name=f"fast-{name}")
        TEACHERS[variant.name] = variant
        out = Path(args.out) / f"{name}-{args.epochs}ep"
        cfg = teacher_config(variant.name, epochs=args.epochs)
        r = train_teacher(ds, out, variant.name, None, cfg, device, data=data, progress=False)
        history = [json.loads(line) for line in (out / METRICS).read_text().splitlines()]
        rows.append({"variant": f"{name} ({used})", "spec": r["spec"], "params": r["params"], "epochs": args.epochs,
                     "batch": cfg.batch_size, "lr": cfg.lr,
                     "train_s": sum(h["train_s"] for h in history), "tta": "flip", "val_acc": 100 * r["val_acc"],
                     "test_acc": 100 * r["test_acc"]})
        print(format_table(rows[-1:], TEACHER_COLUMNS), flush=True)
    if "full" in names:  # test-time augmentation of the full recipe's model: evaluation only
        from shallowmimic.training.batches import evaluate

        out = Path(args.out) / f"full-{args.epochs}ep"
        set_precision(args.precision)
        full = rows[names.index("full")]
        for tta in ("none", "flip", "flip-translate"):
            model, meta = load_model(out, device)
            model = with_tta(model, tta).eval()
            rows.append({**{k: full[k] for k in ("batch", "lr")},
                         "variant": "full", "spec": meta["spec"], "params": meta["params"], "tta": tta,
                         "epochs": args.epochs, "train_s": full["train_s"],
                         "val_acc": 100 * evaluate(model, data.x_val, data.y_val),
                         "test_acc": 100 * evaluate(model, data.x_test, data.y_test)})
    print(format_table(rows, TEACHER_COLUMNS))
    print(f"machine reference: {machine_reference(device):,.0f} GFLOP/s (fp32 matmul)  (after)")


if __name__ == "__main__":
    main()
