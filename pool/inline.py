"""Running one job without a manager: subprocess stays the fallback.

    pool run / Spool.run / submit(fallback="inline"), no manager serving the spool:
        the caller writes the job's queued status and starts a supervisor:
    python -m pool.inline supervise SPOOL ID    does the manager's part for this one job:
        starts the worker, enforces the timeout, carries out `pool kill`, waits out
        retries, appends events, and exits once the job is final
    python -m pool.inline work SPOOL ID         the worker: the same code a manager's
        worker runs (lease, status, log, progress), in its own process group

So `pool status`, `pool logs` and `pool kill` work the same as under a manager. If a
manager starts meanwhile, it adopts the running job (the lease says it is alive) and the
supervisor steps aside when it sees the job run elsewhere.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from typing import Callable

from . import lifecycle
from .errors import JobBusy, JobNotFound
from .model import JobStatus, State, parse_time, utc_now
from .procs import describe_exit, signal_group
from .spool import SpoolDir
from .worker import Worker, WorkerConfig

log = logging.getLogger(__name__)

TICK = 0.05  # the supervisor's look at its child, the job and kill requests
KILL_GRACE = 5.0
SKIPPED = 3  # the worker's exit code when another process already runs the job


def start_supervisor(spool: SpoolDir, job_id: str, task_modules: tuple[str, ...] = (),
                     allow_commands: bool = True) -> subprocess.Popen[bytes]:
    """Start the supervisor of one job, detached from the caller's terminal signals."""
    argv = [sys.executable, "-m", "pool.inline", "supervise", str(spool.root), job_id]
    argv += [f"--tasks={m}" for m in task_modules] + (["--allow-commands"] if allow_commands else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True, env=env)


class Supervisor:
    def __init__(self, spool: SpoolDir, job_id: str, options: list[str]) -> None:
        self.spool = spool
        self.job_id = job_id
        self.worker_argv = [sys.executable, "-m", "pool.inline", "work", str(spool.root), job_id, *options]

    def run(self) -> None:
        """Attempts until the job is final, or until it turns out to run elsewhere."""
        while True:
            status = self.spool.read_status(self.job_id)
            if status.state.is_final:
                self.spool.drop_request("kill", self.job_id)
                return
            if self.spool.request_pending("kill", self.job_id) and status.state is State.QUEUED:
                self.settle(lambda s: lifecycle.cancel(s, utc_now()), status, started=False)
                continue
            if status.next_try_at and parse_time(status.next_try_at).timestamp() > time.time():
                time.sleep(TICK)
                continue
            if self.spool.is_leased(self.job_id):
                return  # a manager (or another supervisor) runs it now
            self.attempt(status)

    def attempt(self, queued: JobStatus) -> None:
        self.spool.append_event(self.job_id, State.QUEUED, State.RUNNING, queued.attempt, "run inline")
        child = subprocess.Popen(self.worker_argv, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + queued.spec.timeout if queued.spec.timeout else None
        why: str | None = None
        kill_at: float | None = None
        while child.poll() is None:
            time.sleep(TICK)
            now = time.monotonic()
            if why is None and self.spool.request_pending("kill", self.job_id):
                why, kill_at = "cancel", now + KILL_GRACE
                signal_group(child.pid, signal.SIGTERM)
            elif why is None and deadline is not None and now >= deadline:
                why, kill_at = "timeout", now + KILL_GRACE
                signal_group(child.pid, signal.SIGTERM)
            elif kill_at is not None and now >= kill_at:
                signal_group(child.pid, signal.SIGKILL)
                kill_at = None
        if child.returncode == SKIPPED:
            return
        if why == "cancel":
            self.settle(lambda s: lifecycle.cancel(s, utc_now()), queued)
        elif why == "timeout":
            self.settle(lambda s: lifecycle.time_out(s, utc_now()), queued)
        else:
            died = lifecycle.error("WorkerDied", f"inline worker {child.pid} {describe_exit(child.returncode)}")
            self.settle(lambda s: lifecycle.fail_attempt(s, died, utc_now()), queued)

    def settle(self, change: Callable[[JobStatus], JobStatus], queued: JobStatus, started: bool = True) -> None:
        """Record how an attempt ended: the worker's own outcome when it wrote one, else
        ``change`` (a job still ``queued`` on disk had started all the same, unless
        ``started`` is False: a queued job cancelled before its attempt)."""
        try:
            before, after = self.spool.update_status(
                self.job_id, lambda current: lifecycle.settle_attempt(current, queued.attempt, change, utc_now(),
                                                                      started))
        except (JobNotFound, JobBusy):
            return
        final = after or before
        reason = final.error["message"] if final.error and final.state is not State.DONE else "finished"
        self.spool.append_event(self.job_id, State.RUNNING if started else State.QUEUED, final.state,
                                queued.attempt, reason)
        if final.state is State.CANCELLED:
            self.spool.drop_request("kill", self.job_id)


def work(spool: SpoolDir, job_id: str, config: WorkerConfig) -> int:
    """The inline worker: run the job once, as a manager's worker would."""
    worker = Worker(config)
    reply = worker.run(spool.read_status(job_id))
    return SKIPPED if reply.get("skipped") else 0


def main(argv: list[str]) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="pool inline: %(message)s")
    command, root, job_id, *options = argv
    modules = tuple(o.split("=", 1)[1] for o in options if o.startswith("--tasks="))
    allow = "--allow-commands" in options
    spool = SpoolDir(root)
    if command == "work":
        os.environ.setdefault("POOL_SPOOL", root)
        return work(spool, job_id, WorkerConfig(spool=root, task_modules=modules, allow_commands=allow,
                                                sys_path=tuple(sys.path)))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller decides: it files a kill request
    hold = spool.supervise(job_id)
    if hold is None:
        return 0  # another supervisor looks after it
    try:
        Supervisor(spool, job_id, options).run()
    finally:
        spool.flush_events()
        os.close(hold)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
