"""What runs in a worker process: one job at a time, many jobs one after another.

    manager --job id--> worker: read status (must still be queued), write `running`,
                                point fds 1 and 2 at logs/<id>.log, run the task or command,
                                write the outcome (done, failed, or queued for a retry)
    manager <--status-- worker

The worker leads its own process group, so a signal to the group ends the job and all
its children and touches no other job; the manager then starts a fresh worker. The
worker writes ``running``, progress and the outcome; every other state is the manager's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Callable, Iterator

import orjson

from . import lifecycle
from .commands import failure, run_command
from .model import JobStatus, State, utc_now
from .procs import process_start_time
from .progress import hook_tqdm, set_reporter
from .reporter import Flusher, StatusReporter
from .spool import SpoolDir
from .tasks import TaskModuleError, load_task_modules, unserved_reason

log = logging.getLogger(__name__)


# The first byte of a job message: sent to an idle worker, or ahead to a busy one.
SENT_NOW, SENT_AHEAD = b"N", b"A"


@dataclass(frozen=True)
class WorkerConfig:
    spool: str
    task_modules: tuple[str, ...] = ()
    allow_commands: bool = False
    progress_interval: float = 0.2
    sys_path: tuple[str, ...] = ()


def error_record(exc: BaseException, with_traceback: bool = True) -> dict[str, Any]:
    # Start the traceback at the job's own code: the worker's frame is noise to its author.
    frames = exc.__traceback__.tb_next if exc.__traceback__ else None
    tb = "".join(traceback.format_exception(type(exc), exc, frames)) if with_traceback else None
    return lifecycle.error(type(exc).__name__, str(exc), tb)


class Worker:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
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
        self.output = JobOutput()

    def run(self, queued: JobStatus, check: bool = False) -> dict[str, Any]:
        """Run one job to the end of its attempt; returns the message for the manager.

        The job's lock is held from start to outcome. If another process holds it, that
        is a worker of a manager that died, already running this job: it is left alone.
        A job sent ahead (``check``) may have been cancelled while it waited here: the
        status on disk, read under the lock, says."""
        lease = self.spool.lease(queued.id)
        if lease is None:
            return {"id": queued.id, "skipped": State.RUNNING.value}
        if check:
            current = self.spool.read_status(queued.id)
            if current.state is not State.QUEUED:
                os.close(lease)
                return {"id": queued.id, "skipped": current.state.value}
        try:
            running = lifecycle.start(queued, self.pid, self.pid_started, utc_now())
            reporter = StatusReporter(self.spool, running, self.config.progress_interval)
            with self.output.to(self.spool.log_path(queued.id), running):
                set_reporter(reporter)
                self.flusher.watch(reporter)
                try:
                    outcome = self.execute(running, reporter)
                finally:
                    set_reporter(None)
                    self.flusher.watch(None)
            final = reporter.finish(outcome)
        finally:
            os.close(lease)
        reply: dict[str, Any] = {"id": final.id, "state": final.state.value}
        if final.state is State.QUEUED:
            reply["status"] = final.to_dict()  # the manager queues the retry as written
        elif final.error:
            reply["reason"] = final.error.get("message")
        return reply

    def execute(self, status: JobStatus, reporter: StatusReporter) -> Callable[[JobStatus], JobStatus]:
        """Run the job; returns how to turn the running status into the attempt's outcome."""
        spec = status.spec
        os.environ["POOL_JOB_ID"] = spec.id
        os.environ["POOL_SPOOL"] = str(self.spool.root)
        if spec.task is not None:
            return self.execute_task(status)
        return run_command(status, reporter, self.config.allow_commands)

    def execute_task(self, status: JobStatus) -> Callable[[JobStatus], JobStatus]:
        spec = status.spec
        assert spec.task is not None
        reason = self.load_error or unserved_reason(spec.task, self.tasks, self.config.task_modules)
        if reason:
            return failure("TaskNotAvailable", reason)
        try:
            value = self.tasks[spec.task](*spec.args, **spec.kwargs)
            orjson.dumps(value)
        except BaseException as exc:  # the job's own failure, whatever it raised
            error = error_record(exc)
            sys.stderr.write(str(error["traceback"]))
            return lambda s: lifecycle.fail_attempt(s, error, utc_now())
        return lambda s: lifecycle.succeed(s, value, utc_now())

class JobOutput:
    """Points fds 1 and 2 (and so sys.stdout/stderr) at the job's log for one attempt,
    so C extensions and child processes write there too; between jobs, at /dev/null."""

    def __init__(self) -> None:
        self.devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)

    @contextlib.contextmanager
    def to(self, path: os.PathLike[str] | str, status: JobStatus) -> Iterator[None]:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        if status.attempt > 1:
            os.write(fd, f"--- pool: attempt {status.attempt} of {status.max_attempts} ---\n".encode())
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        try:
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
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


def worker_main(conn: Connection, config: WorkerConfig) -> None:
    """Entry point of a worker process: serve job ids from the manager until the pipe closes."""
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the manager decides when jobs stop
    for entry in reversed(config.sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    _detach_stdio()
    worker = Worker(config)
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the manager is gone or told us to stop
        job = JobStatus.decode(message[1:])
        try:
            reply = worker.run(job, check=message[:1] == SENT_AHEAD)
        except Exception as exc:  # a bug or an unusable spool: say so, and let the manager decide
            log.exception("job %s: worker error", job.id)
            reply = {"id": job.id, "crashed": f"{type(exc).__name__}: {exc}"}
        try:
            conn.send_bytes(orjson.dumps(reply))
        except OSError:
            return  # the manager died; the outcome is on disk for the next one
