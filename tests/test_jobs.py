"""Issue 10: fixed jobs shared by worker processes through an Optuna study (the job queue alone;
tests/test_workers.py runs whole studies)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

WORKER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from shallowmimic.search.jobs import open_queue, run_jobs
    from shallowmimic.search.storage import make_storage

    url, log, keys, slow = sys.argv[1], Path(sys.argv[2]), sys.argv[3].split(","), sys.argv[4]
    storage = make_storage(url, heartbeat=1, grace=3)
    study = open_queue(storage, "jobs")

    def work(key):
        with open(log, "a") as f:
            f.write(f"start {key} {os.getpid()}\\n")
        time.sleep(3 if key == slow else 0.2)
        if key == "bad":
            raise RuntimeError("this job always fails")
        with open(log, "a") as f:
            f.write(f"done {key} {os.getpid()}\\n")
        return True

    run_jobs(study, storage, keys, work, poll=0.2)
""")


def start(tmp_path, url, keys, slow=""):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return subprocess.Popen([sys.executable, str(script), url, str(tmp_path / "log"), ",".join(keys), slow],
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def lines(tmp_path, kind):
    return [line.split()[1:] for line in (tmp_path / "log").read_text().splitlines() if line.startswith(kind)]


def test_three_workers_do_every_job_exactly_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    keys = [f"job{i}" for i in range(12)]
    procs = [start(tmp_path, url, keys) for _ in range(3)]
    assert all(p.wait(120) == 0 for p in procs)
    done = lines(tmp_path, "done")
    assert sorted(k for k, _ in done) == sorted(keys)  # each exactly once
    assert len({pid for _, pid in done}) >= 2  # the work was shared


def test_a_killed_worker_leaves_its_job_to_another(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    keys = [f"job{i}" for i in range(6)]
    victim = start(tmp_path, url, keys, slow="job0")
    while not (tmp_path / "log").exists() or not lines(tmp_path, "start"):
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    procs = [start(tmp_path, url, keys) for _ in range(2)]
    assert all(p.wait(120) == 0 for p in procs)
    done = [k for k, _ in lines(tmp_path, "done")]
    assert sorted(done) == sorted(keys)  # job0, killed mid-way, was finished by another worker
    assert [k for k, _ in lines(tmp_path, "start")].count("job0") == 2


def test_a_failing_job_stops_every_worker_and_runs_once(tmp_path):
    """A job that raises (a diverged teacher) is not retried by each worker in turn: the workers
    waiting for it stop with its error."""
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    keys = ["bad"] + [f"job{i}" for i in range(5)]
    procs = [start(tmp_path, url, keys) for _ in range(2)]
    assert all(p.wait(120) != 0 for p in procs)
    assert [k for k, _ in lines(tmp_path, "start")].count("bad") == 1


def test_worker_environments_divide_gpus_and_threads():
    from shallowmimic.cli.launch import worker_envs

    assert worker_envs(2, [], 16) == [{"SHALLOWMIMIC_THREADS": "8", "SHALLOWMIMIC_WORKERS": "2"}] * 2
    assert [e["CUDA_VISIBLE_DEVICES"] for e in worker_envs(3, ["4", "5"], 16)] == ["4", "5", "4"]
    assert worker_envs(4, [], 2)[0]["SHALLOWMIMIC_THREADS"] == "1"
    assert worker_envs(2, [], 16, threads="3")[1]["SHALLOWMIMIC_THREADS"] == "3"  # the user's choice wins


def test_only_dead_workers_of_this_process_table_are_reaped(tmp_path):
    import optuna

    from shallowmimic.search.jobs import JOB, host_id, open_queue, reap, worker_id
    from shallowmimic.search.storage import make_storage

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    storage = make_storage(f"sqlite:///{tmp_path / 'studies.db'}", heartbeat=60)
    study = open_queue(storage, "jobs")
    workers = {"mine-dead": f"{host_id()}:{dead.pid}", "mine-alive": worker_id(),
               # the same host name in another container (pid namespace): its pids are not ours
               "other-ns": f"{os.uname().nodename}/pidns1:{dead.pid}"}
    for key, worker in workers.items():
        study.enqueue_trial({}, user_attrs={JOB: key})
        trial = study.ask()
        trial.set_user_attr("worker", worker)
    reap(study, storage)
    states = {t.user_attrs[JOB]: t.state for t in study.get_trials()}
    assert states == {"mine-dead": optuna.trial.TrialState.FAIL, "mine-alive": optuna.trial.TrialState.RUNNING,
                      "other-ns": optuna.trial.TrialState.RUNNING}


def test_a_claim_of_another_host_that_never_beat_is_failed_after_the_grace_period(tmp_path):
    """Issue 21 item 14: a worker on another machine killed between its claim and its first
    heartbeat left its trial RUNNING for ever (Optuna ages heartbeats, and it had none)."""
    import optuna

    from shallowmimic.search.jobs import JOB, open_queue, reap
    from shallowmimic.search.storage import make_storage

    storage = make_storage(f"sqlite:///{tmp_path / 'studies.db'}", heartbeat=1)  # grace: 2 s
    study = open_queue(storage, "jobs")
    for key in ("dead", "alive"):
        study.enqueue_trial({}, user_attrs={JOB: key})
        study.ask().set_user_attr("worker", f"unknown-host-{key}:4242")
    alive = next(t.number for t in study.get_trials() if t.user_attrs[JOB] == "alive")
    alive_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("jobs"), alive)

    def states():
        return {t.user_attrs[JOB]: t.state for t in study.get_trials()}

    deadline = time.time() + 8
    while time.time() < deadline and states()["dead"] == optuna.trial.TrialState.RUNNING:
        storage.record_heartbeat(alive_id)  # the live owner beats; the dead one never did
        reap(study, storage)
        time.sleep(0.3)
    assert states() == {"dead": optuna.trial.TrialState.FAIL, "alive": optuna.trial.TrialState.RUNNING}


def test_a_job_taken_over_while_it_ran_goes_to_its_next_taker_and_its_own_errors_propagate(tmp_path):
    """Issue 22 item 4: the takeover is told by the trial's state, not by an error message's
    text, so a job's own error that happens to read alike propagates as itself."""
    import optuna

    from shallowmimic.search.jobs import JOB, open_queue, run_jobs
    from shallowmimic.search.storage import make_storage

    storage = make_storage(f"sqlite:///{tmp_path / 'studies.db'}", heartbeat=60)
    study = open_queue(storage, "jobs")
    calls, log = [], []

    def work(key):  # the first time, another worker's reaper fails our claim while we work
        calls.append(key)
        if len(calls) == 1:
            mine = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))[0]
            study.tell(mine.number, state=optuna.trial.TrialState.FAIL)
        return True

    assert run_jobs(study, storage, ["a"], work, poll=0.05, log=log.append) == ["a"]  # the second take
    assert calls == ["a", "a"] and any("taken over" in line for line in log)
    assert [t.state for t in study.get_trials() if t.user_attrs.get(JOB) == "a"][-1] == optuna.trial.TrialState.COMPLETE

    def own_error(key):
        raise ValueError("Cannot tell which file to read")

    with pytest.raises(ValueError, match="Cannot tell which file"):
        run_jobs(study, storage, ["b"], own_error, poll=0.05, log=log.append)

    def taken_then_failed(key):  # our claim is failed by another reaper, then the job raises
        mine = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))[0]
        study.tell(mine.number, state=optuna.trial.TrialState.FAIL)
        raise RuntimeError("the job's own failure")

    with pytest.raises(RuntimeError, match="the job's own failure"):
        run_jobs(study, storage, ["c"], taken_then_failed, poll=0.05, log=log.append)


def test_the_queue_needs_of_a_job_only_its_key_and_done(tmp_path):
    from dataclasses import dataclass

    from shallowmimic.search.jobs import JobQueue, open_queue
    from shallowmimic.search.storage import make_storage

    @dataclass
    class Task:
        key: str
        finished: bool = False

        def done(self):
            return self.finished

    storage = make_storage(f"sqlite:///{tmp_path / 'studies.db'}", heartbeat=60)
    queue = JobQueue(open_queue(storage, "jobs"), storage, poll=0.05, log=lambda s: None)
    tasks = [Task("one"), Task("two", finished=True)]
    done = []

    def work(task):
        done.append(task.key)
        task.finished = True

    queue.share(tasks, work)
    assert done == ["one"]
    assert queue.keys(tasks) == ["one#0", "two#0"]
    tasks[0].finished = False  # its result deleted: the next generation of its key
    assert queue.keys(tasks) == ["one#1", "two#0"]
