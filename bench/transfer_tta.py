"""Does test-time augmentation of the ensemble's logits make better mimic targets? Label the
same transfer set (same seed: same images, same order) with each TTA mode, train the same
students on each, and compare their validation accuracy (the test set is never read).

    python bench/transfer_tta.py --data ../shared/data/cifar10.npz --run runs/quick-s0 --modes none,flip

Prints, per mode, the labelling time and each student's validation accuracy; uses the run's
split, ensemble and transfer settings, and the preset's student settings.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from shallowmimic.core.config import from_dict
from shallowmimic.core.device import configure_threads, machine_reference, resolve_device, set_precision
from shallowmimic.core.files import read_json
from shallowmimic.data.sources import load_dataset
from shallowmimic.data.split import split_tensors
from shallowmimic.distill.ensemble import load_ensemble
from shallowmimic.distill.students import StudentSetting, train_student
from shallowmimic.distill.transfer import TransferConfig, generate
from shallowmimic.models.budget import parse_budget
from shallowmimic.study.config import StudyConfig
from shallowmimic.study.planning import student_train_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--run", required=True, help="a study directory with a finished ensemble")
    ap.add_argument("--modes", default="none,flip")
    ap.add_argument("--families", default="mlp1,conv1,conv4")
    ap.add_argument("--budget", default="100k")
    ap.add_argument("--out", default="runs/transfer-tta")
    args = ap.parse_args()
    configure_threads()  # as the CLI does: explicit thread count

    run = read_json(Path(args.run) / "run.json", "not a study directory")
    cfg = from_dict(StudyConfig, run["config"], "run.json")
    set_precision(cfg.precision)
    device = resolve_device(cfg.device)
    ds = load_dataset(Path(args.data))
    data = split_tensors(ds, cfg.data, device)
    ens_dir = next(p for p in (Path(args.run) / "ensemble").iterdir() if p.is_dir())
    print(f"machine reference: {machine_reference(device):,.0f} GFLOP/s; ensemble {ens_dir}", flush=True)
    tr = cfg.transfer
    for mode in args.modes.split(","):
        out = Path(args.out) / f"{Path(args.run).name}-tta-{mode}"
        t0 = time.perf_counter()
        generate(load_ensemble(ens_dir, device, mode, cfg.teachers.external), data.x_train,
                 TransferConfig(epochs=tr.epochs, seed=tr.seed, images=tr.images), out / "transfer",
                 {"ensemble": str(ens_dir), "split_fingerprint": data.fingerprint, "tta": mode}, progress=False)
        label_s = time.perf_counter() - t0
        accs = []
        for family in args.families.split(","):
            r = train_student(ds, out / "transfer", StudentSetting(family, parse_budget(args.budget), "mimic"),
                              student_train_config(cfg, "mimic", 0), out / family, device, cfg.data,
                              progress=False, data=data, evaluate_test=False)
            accs.append(r["val_acc"])
            print(f"tta {mode:15s} {family:6s} val {100 * r['val_acc']:6.2f}%", flush=True)
        print(f"tta {mode:15s} labelling {label_s:.0f} s; mean val {100 * sum(accs) / len(accs):.2f}%", flush=True)


if __name__ == "__main__":
    main()
