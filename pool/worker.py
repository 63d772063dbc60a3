"""What runs in a worker process: one attempt at a time, many attempts one after another.

    manager --RunAttempt(job)--> worker: take the job's lock; read its status file: it must
        still say queued, for that attempt, and due (else Skipped); mark the start in the
        lock file; point fds 1 and 2 at logs/<id>.log; run the task or command; end
        whatever it left running; write the outcome (done, failed, or queued for a retry)
    manager <--Changed, then Finished | Skipped | Crashed-- worker

The worker leads its own process group, so a signal to the group ends the job and all
its children and touches no other job, and it is a child subreaper, so what a job leaves
behind (even a daemon's double fork) comes back to it to be ended. It writes ``running``,
progress and the outcome; every other state is the manager's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from multiprocessing.connection import Connection
from typing import Any

import orjson

from . import lifecycle
from . import messages as msg
from .commands import failure, run_command
from .errors import CorruptStatus, JobNotFound
from .joblog import LogCap
from .ledger import Ledger, Transition
from .lifecycle import Role
from .locks import LEASE_PATIENCE
from .model import JobStatus, State, parse_time, utc_now
from .procs import become_subreaper, end_rest_of_group, process_start_time
from .progress import hook_tqdm, set_reporter
from .reporter import Flusher, StatusReporter
from .rules import MAX_NESTING, nesting_depth
from .spool import SpoolDir
from .tasks import TaskModuleError, load_task_modules, unserved_reason

log = logging.getLogger(__name__)

CLOCK_SLACK = timedelta(milliseconds=50)  # the manager times retries on its own clock
STATE_NAMES = frozenset(s.value for s in State)


@dataclass(frozen=True)
class WorkerConfig:
    spool: str
    task_modules: tuple[str, ...] = ()
    allow_commands: bool = False
    allow_loader_env: bool = False
    progress_interval: float = 0.2
    max_log_bytes: int | None = None  # pool serve --max-log-bytes: see pool.joblog
    sys_path: tuple[str, ...] = ()
    name: str = "worker"  # how the timeline names who started an attempt


def error_record(exc: BaseException, with_traceback: bool = True) -> dict[str, Any]:
    # Start the traceback at the job's own code: the worker's frame is noise to its author.
    frames = exc.__traceback__.tb_next if exc.__traceback__ else None
    tb = "".join(traceback.format_exception(type(exc), exc, frames)) if with_traceback else None
    return lifecycle.error(type(exc).__name__, str(exc), tb)


class Worker:
    def __init__(self, config: WorkerConfig, send: Callable[[bytes], None]) -> None:
        self.config = config
        self.send = send
        self.spool = SpoolDir(config.spool)
        self.pid = os.getpid()
        self.pid_started = process_start_time(self.pid)
        self.tasks: dict[str, Callable[..., Any]] = {}
        self.load_error: str | None = None
        try:
            self.tasks = load_task_modules(config.task_modules)
        except TaskModuleError as exc:
            self.load_error = str(exc)
        hook_tqdm()
        self.flusher = Flusher()
        self.output = JobOutput(self.spool)
        # A job that forks without exec hands its children the lock's descriptor: they
        # must not keep the job locked (and so block its next attempt) while they live.
        self.held: list[int] = []
        os.register_at_fork(after_in_child=self._drop_held)

    def _drop_held(self) -> None:
        for fd in self.held:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.held.clear()

    def run(self, order: msg.RunAttempt) -> msg.Reply:
        """Run one attempt to its end (or find it must not start) and say how it went."""
        try:
            lease = self.spool.locks.lease(order.job_id, create=True, patience=LEASE_PATIENCE)
        except (JobNotFound, CorruptStatus, OSError) as exc:
            return msg.Skipped(order.job_id, order.attempt, None, f"cannot take the job's lock: {exc}")
        if lease is None:
            return msg.Skipped(order.job_id, order.attempt, State.RUNNING, "another process holds the job")
        self.held.append(lease)
        try:
            return self._run_locked(order, lease)
        finally:
            self.held.remove(lease)
            os.close(lease)

    def _run_locked(self, order: msg.RunAttempt, lease: int) -> msg.Reply:
        try:
            on_disk = self.spool.read_status_document(order.job_id)
        except (JobNotFound, CorruptStatus, OSError) as exc:
            return msg.Skipped(order.job_id, order.attempt, None, f"cannot read its status: {exc}")
        state, why_not = not_runnable(on_disk, order.job)
        if why_not:
            return msg.Skipped(order.job_id, order.attempt, state, why_not)
        queued = order.job
        try:
            self.spool.locks.mark_started(lease, queued.attempt, self.pid, self.pid_started)
        except OSError as exc:
            return msg.Skipped(order.job_id, order.attempt, State.QUEUED, f"cannot record its start: {exc}")
        try:
            return self._attempt(queued, lease)
        except Exception as exc:  # a bug, or an unusable spool: the manager decides what it means
            log.exception("job %s: worker error", queued.id)
            return msg.Crashed(queued.id, queued.attempt, True, f"{type(exc).__name__}: {exc}")

    def _attempt(self, queued: JobStatus, lease: int) -> msg.Reply:
        sent: list[Transition] = []
        ledger = Ledger(self.spool, Role.WORKER, sent.append)
        running = lifecycle.start(queued, self.pid, self.pid_started, utc_now())
        reporter = StatusReporter(ledger, queued, running, self.config.progress_interval, lease,
                                  f"{self.config.name} pid {self.pid}")
        ledger.hear = self._tell
        cap = LogCap(self.config.max_log_bytes) if self.config.max_log_bytes else None
        with self.output.to(queued):
            set_reporter(reporter)
            self.flusher.watch(reporter, cap)
            try:
                outcome = self.execute(running, reporter, cap)
            finally:
                end_rest_of_group()  # what the job left running ends with it
                set_reporter(None)
                self.flusher.watch(None)
                if cap is not None:
                    cap.check()  # what it printed last is within the limit too
        ledger.hear = sent.append
        try:
            reporter.finish(outcome)
        except (OSError, ValueError) as exc:  # the outcome stands: the manager is to write it
            return msg.Finished(queued.id, queued.attempt, tuple(sent), reporter.status, f"{type(exc).__name__}: {exc}")
        return msg.Finished(queued.id, queued.attempt, tuple(sent))

    def _tell(self, transition: Transition) -> None:
        """A state change while the job runs (its start): the manager hears of it now.
        (Called with the reporter's mutex held, so it never interleaves with a reply.)"""
        try:
            self.send(msg.encode_reply(msg.Changed((transition,))))
        except OSError:
            pass  # the manager is gone; the next one reads the status file

    def execute(self, status: JobStatus, reporter: StatusReporter,
                cap: LogCap | None = None) -> Callable[[JobStatus], JobStatus]:
        """Run the job; returns how to turn the running status into the attempt's outcome."""
        spec = status.spec
        os.environ["POOL_JOB_ID"] = spec.id
        os.environ["POOL_SPOOL"] = str(self.spool.root)
        if spec.task is not None:
            return self.execute_task(status)
        return run_command(status, reporter, self.config.allow_commands, self.config.allow_loader_env, cap)

    def execute_task(self, status: JobStatus) -> Callable[[JobStatus], JobStatus]:
        spec = status.spec
        assert spec.task is not None
        reason = self.load_error or unserved_reason(spec.task, self.tasks, self.config.task_modules)
        if reason:
            return failure("TaskNotAvailable", reason)
        try:
            value = self.tasks[spec.task](*spec.args, **spec.kwargs)
            orjson.dumps(value)
            if nesting_depth(value) > MAX_NESTING:
                raise ValueError(f"the result is nested more than {MAX_NESTING} levels deep")
        except BaseException as exc:  # the job's own failure, whatever it raised
            error = error_record(exc)
            sys.stderr.write(str(error["traceback"]))
            return lambda s: lifecycle.fail_attempt(s, error, utc_now())
        return lambda s: lifecycle.succeed(s, value, utc_now())


def not_runnable(on_disk: dict[str, Any], job: JobStatus) -> tuple[State | None, str | None]:
    """(the state on disk, why the handed-over attempt must not start now, or None). The
    status file, read under the job's lock, is the truth; the copy handed over may be
    stale: it runs only if the file says it is still queued, for that attempt, and due."""
    state = State(on_disk["state"]) if on_disk.get("state") in STATE_NAMES else None
    if state is not State.QUEUED:
        return state, f"its status says {on_disk.get('state')!r}"
    if on_disk.get("id") != job.id or on_disk.get("attempt") != job.attempt:
        return state, f"it waits for attempt {on_disk.get('attempt')!r}, not {job.attempt}"
    next_try = on_disk.get("next_try_at")
    if isinstance(next_try, str) and parse_time(next_try) > datetime.now(timezone.utc) + CLOCK_SLACK:
        return state, f"its next try is at {next_try}"
    return state, None


class JobOutput:
    """Points fds 1 and 2 (and so sys.stdout/stderr) at the job's log for one attempt,
    so C extensions and child processes write there too; between jobs, at /dev/null."""

    def __init__(self, spool: SpoolDir) -> None:
        self.spool = spool
        self.devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)

    @contextlib.contextmanager
    def to(self, status: JobStatus) -> Iterator[None]:
        try:
            fd = self.spool.open_log(status.id)
        except (OSError, ValueError) as exc:
            log.error("job %s: cannot open its log (%s); its output is dropped", status.id, exc)
            fd = os.dup(self.devnull)
        if status.attempt > 1:
            with contextlib.suppress(OSError):
                os.write(fd, f"--- pool: attempt {status.attempt} of {status.max_attempts} ---\n".encode())
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        try:
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
            os.dup2(self.devnull, 1)
            os.dup2(self.devnull, 2)


def _detach_stdio() -> None:
    """Jobs get no stdin; their output goes to their log, never the manager's terminal.
    The worker's own log lines keep going to the manager's stderr through a copy of it."""
    saved = os.dup(2)
    handler = logging.StreamHandler(os.fdopen(saved, "w", buffering=1))
    handler.setFormatter(logging.Formatter("%(asctime)s worker %(process)d %(levelname)s %(message)s"))
    logging.getLogger("pool").addHandler(handler)
    null_in = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_in, 0)
    os.close(null_in)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)


def worker_main(conn: Connection, config: WorkerConfig, close_fds: tuple[int, ...] = ()) -> None:
    """Entry point of a worker process: run attempts from the manager until the pipe closes."""
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the manager decides when jobs stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for fd in close_fds:  # what a forked worker must not inherit (the supervisor's hold)
        with contextlib.suppress(OSError):
            os.close(fd)
    become_subreaper()
    for entry in reversed(config.sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    _detach_stdio()
    worker = Worker(config, conn.send_bytes)
    try:
        conn.send_bytes(msg.encode_reply(msg.Ready()))  # set up: a stop of our group reaches us now
    except OSError:
        return
    while True:
        try:
            order = msg.RunAttempt.decode(conn.recv_bytes())
        except (EOFError, OSError):
            return  # the manager is gone or told us to stop
        reply = worker.run(order)
        try:
            conn.send_bytes(msg.encode_reply(reply))
        except OSError:
            return  # the manager died; the outcome is on disk for the next one
