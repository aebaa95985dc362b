"""`run --workers N`: start N cooperating workers of the same study on this machine.

Each worker is the same `shallowmimic run` command in its own process; they divide the study
through its job queue (jobs.py). With N or more GPUs visible each worker gets its own GPU;
otherwise the CPU threads are divided between them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from .errors import UserError


def worker_envs(n: int, gpus: list[str], cores: int, threads: str = "") -> list[dict[str, str]]:
    """Per-worker environment: a GPU each (round-robin when fewer than N) and cores // N CPU
    threads (unless SHALLOWMIMIC_THREADS is set already)."""
    envs = []
    for k in range(n):
        env = {"SHALLOWMIMIC_THREADS": threads or str(max(1, cores // n))}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[k % len(gpus)]
        envs.append(env)
    return envs


def visible_gpus(device: str) -> list[str]:
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return []
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [g.strip() for g in given.split(",") if g.strip()] if given else []
    return ids or [str(i) for i in range(torch.cuda.device_count())]


def launch(run_args: list[str], n: int, out: Path, device: str = "auto", echo=print, report: bool = True) -> None:
    """Start `n` workers running `shallowmimic run *run_args` and wait for them; if one fails,
    stop the others and raise with its last line. Worker 0 writes the report (unless `report`
    is false: another machine's worker will)."""
    if n < 1:
        raise UserError(f"--workers {n}: expected 1 or more")
    from .inference import cores

    logs = Path(out) / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    gpus = visible_gpus(device)
    procs = []
    for k, extra in enumerate(worker_envs(n, gpus, cores(), os.environ.get("SHALLOWMIMIC_THREADS", ""))):
        log = open(logs / f"worker-{k}.log", "w")  # noqa: SIM115 (closed below, after the process)
        # one report, by worker 0: the others would only write the same files again, at the same time
        cmd = [sys.executable, "-m", "shallowmimic", "run", *run_args, *(["--no-report"] if k or not report else [])]
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **extra}), log))
        where = f"GPU {extra['CUDA_VISIBLE_DEVICES']}" if gpus else f"{extra['SHALLOWMIMIC_THREADS']} CPU thread(s)"
        echo(f"worker {k}: {where}, log {logs / f'worker-{k}.log'}")
    try:
        while any(p.poll() is None for p, _ in procs):
            failed = [k for k, (p, _) in enumerate(procs) if p.poll()]
            if failed:
                for p, _ in procs:
                    if p.poll() is None:
                        p.terminate()
                for p, _ in procs:
                    p.wait()
                break
            time.sleep(1)
    finally:
        for _, log in procs:
            log.close()
    failed = [k for k, (p, _) in enumerate(procs) if p.returncode]
    if failed:
        k = failed[0]
        last = (logs / f"worker-{k}.log").read_text().strip().splitlines()[-1:] or ["(empty log)"]
        raise UserError(f"worker {k} failed (exit {procs[k][0].returncode}): {last[0]}; logs in {logs}")
    echo((logs / "worker-0.log").read_text().rstrip())
    from .io import read_json

    per_worker = read_json(Path(out) / "run.json", "no run.json").get("jobs_per_worker", {})
    echo("jobs per worker: " + ", ".join(f"{w} {n}" for w, n in sorted(per_worker.items())))
