#!/usr/bin/env bash
# The device check (issue 10): one script to run once on a machine with a CUDA GPU, within about
# 10 minutes on an H200. Its log is what docs/results/gpu.md records.
#
#   bash bench/gpu_check.sh CIFAR10_SOURCE [OUT]         (OUT defaults to runs/gpu-check)
#
# 1. `bench train`: images/s, achieved FLOP/s and the fraction of the device's peak per model;
# 2. `bench teacher`: the fast teacher to its accuracy, with its training wall time;
# 3. a slice of the paper preset: one paper teacher and one 10M conv4 mimic student for $EPOCHS
#    epochs each (transfer set of $EPOCHS epochs), with run.json's per-stage wall times;
# 4. the paper preset's projection from FLOP counts, with the fractions of peak of step 1 beside it.
# DEVICE=cpu and EXTRA="--set data.train_limit=500 --set transfer.images=500" try it on a CPU.
set -euo pipefail
DATA=${1:?usage: bash bench/gpu_check.sh CIFAR10_SOURCE [OUT]}
OUT=${2:-runs/gpu-check}
DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-3}
FAST=${FAST:-fast:8}
mkdir -p "$OUT"
{
  echo "== $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo '?') device $DEVICE"
  shallowmimic bench train --device "$DEVICE"
  shallowmimic bench teacher --device "$DEVICE" --data "$DATA" --run "$FAST" --out "$OUT/fast"
  # shellcheck disable=SC2086  # EXTRA is a list of options
  shallowmimic run --preset paper --out "$OUT/paper-slice" --data "$DATA" --device "$DEVICE" --no-progress \
    --set search.teacher_trials=0 --set search.student_trials=0 --set teachers.count=1 \
    --set teachers.epochs="$EPOCHS" --set ensemble.k=1 --set transfer.epochs="$EPOCHS" \
    --set 'students.families=["conv4"]' --set 'students.budgets=["10M"]' --set 'students.hard_budgets=[]' --set 'students.hard_families=[]' \
    --set students.epochs="$EPOCHS" --set inference.enabled=false ${EXTRA:-}
  python - "$OUT/paper-slice/run.json" "$EPOCHS" <<'PY'
import json, sys
run, epochs = json.load(open(sys.argv[1])), int(sys.argv[2])
for s in run["stages"]:
    print(f"paper slice: {s['stage']:<13} {s['wall_s']:8.1f} s  ({s['wall_s'] / epochs:.1f} s per epoch)")
PY
  python bench/project_paper.py
} 2>&1 | tee "$OUT/gpu_check.log"
