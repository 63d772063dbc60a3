"""Running one job without a manager: subprocess stays the fallback.

    pool run / Spool.run / submit(fallback="inline"), no manager serving the spool:
        the caller takes the job's supervisor hold (status/<id>.inline), writes the
        queued status, and starts a supervisor with the hold:
    python -m pool.inline SPOOL ID --hold-fd=N   does the manager's part for this one job,
        with the manager's own parts: a LocalExecutor with one worker (forked: the
        supervisor has no threads), Outcomes, a Ledger, the same kill policy; it enforces
        the timeout, carries out `pool kill` (with its grace), waits out retries, appends
        events, and exits once the job is final

So `pool status`, `pool logs` and `pool kill` work the same as under a manager. A manager
started meanwhile leaves the job to its supervisor (the hold says it is looked after) and
takes it over only if the supervisor dies.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import subprocess
import sys
from multiprocessing.connection import wait

from .clock import SystemClock, iso_now
from .dispatch import Dispatch
from .errors import CorruptStatus, JobBusy, JobNotFound
from .events import TRIM_PATIENCE
from .executor import StopReason
from .ledger import Ledger, append_to_events
from .lifecycle import Role, cancel_if_queued
from .local import LocalExecutor
from .model import JobStatus, State
from .outcomes import Outcomes
from .requests import RequestKind
from .spool import SpoolDir
from .worker import WorkerConfig

log = logging.getLogger(__name__)

TICK = 0.05  # the supervisor's look at kill requests while nothing else wakes it
KILL_GRACE = 5.0


def start_supervisor(spool: SpoolDir, job_id: str, hold_fd: int, task_modules: tuple[str, ...] = (),
                     allow_commands: bool = True) -> subprocess.Popen[bytes]:
    """Start the supervisor of one job, detached from the caller's terminal signals; it
    inherits the hold the caller took (``hold_fd``), so the job is never unlooked-after."""
    argv = [sys.executable, "-m", "pool.inline", str(spool.root), job_id, f"--hold-fd={hold_fd}"]
    argv += [f"--tasks={m}" for m in task_modules] + (["--allow-commands"] if allow_commands else [])
    # The task's module must import there as it does here: its folder, and ours, lead the path.
    path = [*(module_folder(m) for m in task_modules), os.getcwd(), os.environ.get("PYTHONPATH")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(dict.fromkeys(p for p in path if p)))
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True, env=env, pass_fds=(hold_fd,))


def module_folder(module: str) -> str | None:
    """The folder a top-level module or package is imported from here, or None."""
    try:
        spec = importlib.util.find_spec(module.split(".", maxsplit=1)[0])
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return None
    origin = os.path.dirname(spec.origin)
    return os.path.dirname(origin) if spec.submodule_search_locations else origin


class Supervisor:
    def __init__(self, spool: SpoolDir, job_id: str, config: WorkerConfig, hold_fd: int) -> None:
        self.spool = spool
        self.job_id = job_id
        self.clock = SystemClock()
        self.ledger = Ledger(spool, Role.SUPERVISOR, append_to_events(spool))
        self.executor = LocalExecutor(config, 1, start_method="fork", close_fds=(hold_fd,))
        self.dispatch = Dispatch(self.executor, self.clock)
        self.outcomes = Outcomes(spool, self.ledger, self.dispatch, self.clock, self._elsewhere, self._trouble)
        self.runs_elsewhere = False

    def _elsewhere(self, job_id: str) -> None:
        self.runs_elsewhere = True  # another process holds the job: it is not ours to run

    def _trouble(self, exc: OSError) -> None:
        log.error("cannot write to the spool (%s); retrying", exc)

    def run(self) -> None:
        """Attempts until the job is final, or until it turns out to run elsewhere."""
        self.executor.open()
        try:
            while not self.runs_elsewhere:
                status = self.spool.read_status(self.job_id)
                if status.state.is_final and not self.executor.busy():
                    self.spool.box.drop(RequestKind.KILL, self.job_id)
                    return
                now = self.clock.monotonic()
                self.carry_out_kill(status, now)
                if status.state is State.QUEUED and not self.executor.holds(self.job_id) \
                        and self.job_id not in self.dispatch.queue:
                    self.dispatch.enqueue(status)
                self.dispatch.queue.promote(now)
                self.dispatch.dispatch(now)
                for job in self.dispatch.overdue(now):
                    self.executor.stop(job.id, StopReason.TIMEOUT, KILL_GRACE, now)
                deadline = min(d for d in (now + TICK, self.executor.next_deadline(now)) if d is not None)
                ready = wait(self.executor.waitables(), max(0.0, deadline - self.clock.monotonic()))
                now = self.clock.monotonic()
                self.outcomes.take(self.executor.collect(list(ready), now), now)
                self.outcomes.retry_pending(now)
                self.spool.events.flush()
        finally:
            self.executor.close()
            self.spool.events.flush(patience=TRIM_PATIENCE)  # the last lines: worth waiting out a trim for

    def carry_out_kill(self, status: JobStatus, now: float) -> None:
        request = self.spool.box.read_one(RequestKind.KILL, self.job_id, self.spool.submitters(None))
        if request is None:
            return
        grace = request.grace if request.grace is not None else KILL_GRACE
        if self.executor.stop(self.job_id, StopReason.CANCEL, grace, now):
            return
        if status.state is State.QUEUED and not self.executor.holds(self.job_id):
            self.dispatch.forget(self.job_id)
            try:
                self.ledger.change(self.job_id, cancel_if_queued(iso_now(self.clock)), "cancelled by request",
                                   wait=0)
            except JobBusy:
                pass  # its worker is starting it: stopped as running on the next look


def main(argv: list[str]) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="pool inline: %(message)s")
    root, job_id, *options = argv
    modules = tuple(o.split("=", 1)[1] for o in options if o.startswith("--tasks="))
    holds = [int(o.split("=", 1)[1]) for o in options if o.startswith("--hold-fd=")]
    spool = SpoolDir(root, buffer_events=True)  # appended each turn of its loop, as the manager's
    os.environ.setdefault("POOL_SPOOL", root)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller decides: it files a kill request
    hold = holds[0] if holds else spool.locks.supervise(job_id)
    if hold is None:
        return 0  # another supervisor looks after it
    # Inline, the job runs as its submitter's own child would: loader variables and all.
    config = WorkerConfig(spool=root, task_modules=modules, allow_commands="--allow-commands" in options,
                          allow_loader_env=True, sys_path=tuple(sys.path), name="inline worker")
    try:
        Supervisor(spool, job_id, config, hold).run()
    except (JobNotFound, CorruptStatus) as exc:
        log.error("job %s: %s", job_id, exc)
        return 1
    finally:
        os.close(hold)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
