"""`run --workers N`: start N cooperating workers of the same study on this machine.

Each worker is the same `shallowmimic run` command in its own process; they divide the study
through its job queue (search/jobs.py). With N or more GPUs visible each worker gets its own GPU;
otherwise the CPU threads are divided between them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from shallowmimic.core.errors import UserError
from shallowmimic.core.layout import RUN_JSON, WORKERS_ENV


def worker_envs(n: int, gpus: list[str], cores: int, threads: str = "") -> list[dict[str, str]]:
    """Per-worker environment: a GPU each (round-robin when fewer than N) and cores // N CPU
    threads (unless SHALLOWMIMIC_THREADS is set already)."""
    envs = []
    for k in range(n):
        env = {"SHALLOWMIMIC_THREADS": threads or str(max(1, cores // n)), WORKERS_ENV: str(n)}
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
    from shallowmimic.deploy.inference import cores

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
    view = LiveView(Path(out), echo)
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
            view.show()
            time.sleep(1)
    finally:
        view.close()
        for _, log in procs:
            log.close()
    failed = [k for k, (p, _) in enumerate(procs) if p.returncode]
    if failed:
        k = failed[0]
        last = (logs / f"worker-{k}.log").read_text().strip().splitlines()[-1:] or ["(empty log)"]
        raise UserError(f"worker {k} failed (exit {procs[k][0].returncode}): {last[0]}; logs in {logs}")
    echo((logs / "worker-0.log").read_text().rstrip())
    from shallowmimic.core.files import read_json

    per_worker = read_json(Path(out) / RUN_JSON, f"no {RUN_JSON}").get("jobs_per_worker", {})
    echo("jobs per worker: " + ", ".join(f"{w} {n}" for w, n in sorted(per_worker.items())))


class LiveView:
    """The study's status (study/status.py) while the workers run: redrawn in place every few seconds
    on a terminal; elsewhere (a log, a pipe) printed when a job finishes, at most once a minute."""

    def __init__(self, out: Path, echo=print, every: float = 5.0):
        self.out, self.echo, self.every = out, echo, every
        self.tty = sys.stdout.isatty()
        self.shown, self.last, self.key = 0, 0.0, None

    def show(self) -> None:
        from shallowmimic.study.status import study_status

        now = time.monotonic()
        if now - self.last < (self.every if self.tty else 60.0):
            return
        try:
            status = study_status(self.out)
        except Exception:  # noqa: BLE001 (no plan.json yet, or one being replaced: the view waits; the workers go on)
            return
        key = tuple(status.stages.items())
        if not self.tty and key == self.key:
            return
        self.last, self.key = now, key
        lines = status.lines()
        if self.tty:  # a line wider than the terminal would wrap and spoil the redraw
            width = shutil.get_terminal_size().columns
            lines = [line[: width - 1] for line in lines]
        if self.tty and self.shown:
            sys.stdout.write(f"\x1b[{self.shown}F\x1b[J")  # back to the view's first line, clear below
        self.echo("\n".join(lines))
        self.shown = len(lines)

    def close(self) -> None:
        self.last = 0.0
        self.key = None
        self.show()
