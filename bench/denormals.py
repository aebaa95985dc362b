"""What flushing denormals to zero buys: a trained teacher's training steps and inference, with
the flag off and on, alternated in fresh processes (the flag must be set before torch starts
its thread pool, so each measurement is its own process). Measured 2026-11-30 on real images:
nothing beyond the machine's noise, so shallowmimic does not set it (docs/results/quick-cpu.md).

    python bench/denormals.py --data ../shared/data/cifar10.npz --teacher runs/quick-s0/teachers/t00-...

Prints a table: images/s for training steps (the teacher's batch size and optimizer, real
augmented batches) and for inference (the teacher's flip TTA, batches of 500, measured first),
per repetition.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from shallowmimic.cli.bench import format_table

CHILD = r"""
import json, sys, time
import torch
flush = sys.argv[1] == "on"
if flush:
    torch.set_flush_denormal(True)  # first, as configure_threads does: threads inherit it
from pathlib import Path
from shallowmimic.training.batches import AugmentedBatches, predict_logits
from shallowmimic.data.sources import load_dataset
from shallowmimic.core.device import autocast, machine_reference
from shallowmimic.models.store import load_model

device = torch.device("cpu")
ds = load_dataset(Path(sys.argv[2]))
model, meta = load_model(Path(sys.argv[3]), device)
model = model.to(memory_format=torch.channels_last)
x, y = torch.from_numpy(ds.x_train[:12288]), torch.from_numpy(ds.y_train[:12288]).long()
# inference first: training steps in train mode would replace batch norm's running statistics
predict_logits(model, x[:500], 500)
t0 = time.perf_counter()
predict_logits(model, x[:4000], 500)
infer = 4000 / (time.perf_counter() - t0)
opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)  # tiny steps: activations stay trained
steps, batch = int(sys.argv[4]), 512
batches = AugmentedBatches(x, y, None, batch, 0, translate=2)
model.train()
n, t0 = 0, None
for i, (xb, yb, _) in enumerate(batches.epoch(0)):
    if i == 1:
        t0 = time.perf_counter()
    with autocast(device):
        loss = torch.nn.functional.cross_entropy(model(xb).float(), yb)
    opt.zero_grad()
    loss.backward()
    opt.step()
    n += len(xb) if i >= 1 else 0
    if i == steps:
        break
train = n / (time.perf_counter() - t0)
print(json.dumps({"train_ips": train, "infer_ips": infer, "reference": machine_reference(device)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--teacher", required=True, help="a trained teacher's directory (fast variant)")
    ap.add_argument("--steps", type=int, default=20, help="timed training steps of batch 512")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    rows = []
    for rep in range(args.repeats):
        for flag in ("off", "on"):
            out = subprocess.run([sys.executable, "-c", CHILD, flag, args.data, args.teacher, str(args.steps)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append({"rep": rep + 1, "flush": flag, **r})
            print(format_table(rows[-1:], COLUMNS), flush=True)
    print(format_table(rows, COLUMNS))


COLUMNS = [("rep", "rep", "d"), ("flush", "denormals flushed", ""), ("train_ips", "train img/s", ",.0f"),
           ("infer_ips", "inference img/s (flip TTA)", ",.0f"), ("reference", "reference GFLOP/s", ",.0f")]

if __name__ == "__main__":
    main()
