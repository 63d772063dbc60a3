"""A local worker process: one attempt at a time, many attempts one after another, each
written into the spool by the worker itself.

    executor --RunAttempt(job)--> worker: take the job's lock; read its status file: it
        must still say queued, for that very attempt, and due (else Skipped); mark the
        start in the lock file; point fds 1 and 2 at logs/<id>.log; run the job's code
        (pool/attempt.py); end whatever it left running; write the outcome (done, failed,
        or queued for a retry)
    executor <--Changed, then Ran | Skipped | Broke-- worker
    executor --TakeBack(job)--> worker: an attempt sent ahead, not begun, is skipped

The pipe is the worker's queue: an attempt sent ahead waits there while one runs. A thread
of the worker reads it (``Orders``) and answers a take-back of an attempt not begun at
once, so a job of higher priority never waits behind one sent ahead
(tests/test_newcomer.py: a higher priority starts first), and one sent ahead to a worker
that stays busy goes to the next worker free.

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
import threading
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from multiprocessing.connection import Connection
from typing import Any

from . import lifecycle
from . import messages as msg
from .attempt import Attempts, WorkerConfig
from .checkpoints import CheckpointBook
from .errors import CorruptStatus, JobNotFound
from .forked import run_forked
from .joblog import LogCap, attempt_header
from .ledger import Ledger, Transition
from .lifecycle import Role, Succeeded, Verdict
from .locks import LEASE_PATIENCE, Lease, WorkerLock
from .model import JobStatus, State, parse_time, utc_now
from .procs import become_subreaper, end_rest_of_group, process_start_time
from .progress import set_reporter
from .reporter import Flusher, StatusReporter
from .runas import run_as
from .spool import SpoolDir, scratch_log

log = logging.getLogger(__name__)

CLOCK_SLACK = timedelta(milliseconds=50)  # the manager times retries on its own clock
STATE_NAMES = frozenset(s.value for s in State)


class Worker:
    def __init__(self, config: WorkerConfig, send: Callable[[bytes], None]) -> None:
        self.config = config
        self.send = send
        self.spool = SpoolDir(config.spool, durable=config.durable)
        self.pid = os.getpid()
        self.pid_started = process_start_time(self.pid)
        self.attempts = Attempts(config)
        self.flusher = Flusher()
        self.output = JobOutput(self.spool)
        self.checkpoints = Checkpoints(self.spool.checkpoints)
        # Made with its first job: a worker started as its spool goes away (an executor's
        # temporary spool at the interpreter's exit) has nothing to fail on.
        self.held_lock: WorkerLock | None = None
        # A job that forks without exec hands its children the lock's descriptor: they
        # must not keep the worker's lock held (and so its jobs seen as running) after it died.
        os.register_at_fork(after_in_child=self._drop_lock)

    @property
    def lock(self) -> WorkerLock:
        if self.held_lock is None:
            self.held_lock = self.spool.locks.worker_lock(self.pid, self.pid_started)
        return self.held_lock

    def _drop_lock(self) -> None:
        for fd in self.held_lock.fds if self.held_lock is not None else ():
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        """Its last attempt is over and it exits: its lock file goes."""
        if self.held_lock is not None:
            with contextlib.suppress(OSError):
                self.held_lock.close()

    def run(self, order: msg.RunAttempt) -> msg.Reply:
        """Run one attempt to its end (or find it must not begin) and say how it went."""
        queued = order.job
        try:
            lease = self.lock.claim(order.job_id, queued.attempt, queued.updated_at, LEASE_PATIENCE)
        except (CorruptStatus, OSError) as exc:
            if self.held_lock is not None:
                with contextlib.suppress(OSError):
                    self.held_lock.unclaim()
            return msg.Skipped(order.job_id, order.attempt, None, f"cannot claim the job: {exc}")
        if lease is None:
            return msg.Skipped(order.job_id, order.attempt, State.RUNNING, "another process holds the job")
        try:
            return self._run_claimed(order, lease)
        finally:
            lease.release()

    def _run_claimed(self, order: msg.RunAttempt, lease: Lease) -> msg.Reply:
        try:
            on_disk = self.spool.read_status_document(order.job_id)
        except (JobNotFound, CorruptStatus, OSError) as exc:
            self.lock.unclaim()
            return msg.Skipped(order.job_id, order.attempt, None, f"cannot read its status: {exc}")
        state, why_not = not_runnable(on_disk, order.job)
        if why_not:
            self.lock.unclaim()
            return msg.Skipped(order.job_id, order.attempt, state, why_not)
        queued = order.job
        try:
            self.lock.begin()
        except OSError as exc:
            self.lock.unclaim()
            return msg.Skipped(order.job_id, order.attempt, State.QUEUED, f"cannot record its start: {exc}",
                               later=True)
        try:
            return self._attempt(queued, lease)
        except Exception as exc:  # a bug, or an unusable spool: the manager decides what it means
            log.exception("job %s: worker error", queued.id)
            return msg.Broke(queued.id, queued.attempt, True, f"{type(exc).__name__}: {exc}")

    def _attempt(self, queued: JobStatus, lease: Lease) -> msg.Reply:
        sent: list[Transition] = []
        ledger = Ledger(self.spool, Role.WORKER, self._tell)
        running = lifecycle.start(queued, self.pid, self.pid_started, utc_now())
        reporter = StatusReporter(ledger, queued, running, self.config.progress_interval, lease,
                                  f"{self.config.name} pid {self.pid}")
        cap = LogCap(self.config.max_log_bytes) if self.config.max_log_bytes else None
        # Each step undone whatever failed before it (a step that raises stops none of the
        # others), last first: the reporter is closed on every way out of the attempt.
        with contextlib.ExitStack() as undo:
            undo.callback(reporter.close)  # nothing more is written for this attempt
            undo.enter_context(self.output.to(queued))
            undo.callback(set_reporter, None)
            set_reporter(reporter)
            undo.callback(self.flusher.watch, None)
            self.flusher.watch(reporter, cap, self.output.publish)
            if cap is not None:
                undo.callback(cap.check)  # what it printed last is within the limit too
            undo.callback(end_rest_of_group)  # what the job left running ends with it
            uid = self.runs_as(queued)
            self.checkpoints.before(queued, uid)
            limits = self.config.limits_of(queued)
            if uid is not None:
                verdict = run_as(uid, queued, reporter, self.config)
            elif limits and queued.spec.task is not None:
                verdict = run_forked(queued, reporter, self.attempts, limits)
            else:
                verdict = self.attempts.run(running, reporter, cap)
            self.checkpoints.after(queued, verdict)
        ledger.hear = sent.append
        try:
            reporter.finish(verdict)
        except (OSError, ValueError) as exc:  # the outcome stands: the manager is to write it
            last = reporter.status
            return msg.Ran(queued.id, queued.attempt, tuple(sent), verdict, (last.progress, last.message),
                           f"{type(exc).__name__}: {exc}")
        return msg.Ran(queued.id, queued.attempt, tuple(sent))

    def runs_as(self, status: JobStatus) -> int | None:
        """The user the attempt's code must run as, when not this process's: its submitter,
        when the manager runs as root and the job is a member's."""
        if self.config.as_submitter and status.submitter not in (None, 0):
            return status.submitter
        return None

    def _tell(self, transition: Transition) -> None:
        """A state change while the job runs (its start): the manager hears of it now.
        (Called with the reporter's mutex held, so it never interleaves with a reply.)"""
        try:
            self.send(msg.encode_reply(msg.Changed((transition,))))
        except OSError:
            pass  # the manager is gone; the next one reads the status file


def not_runnable(on_disk: dict[str, Any], job: JobStatus) -> tuple[State | None, str | None]:
    """(the state on disk, why the handed-over attempt must not begin now, or None). The
    status file, read under the job's lock, is the truth; the copy handed over may be
    stale: it runs only if the file says it is still queued, for that very attempt (the
    same number, queued at the same moment), and due."""
    state = State(on_disk["state"]) if on_disk.get("state") in STATE_NAMES else None
    if state is not State.QUEUED:
        return state, f"its status says {on_disk.get('state')!r}"
    if on_disk.get("id") != job.id or on_disk.get("attempt") != job.attempt:
        return state, f"it waits for attempt {on_disk.get('attempt')!r}, not {job.attempt}"
    if on_disk.get("updated_at") != job.updated_at:
        return state, f"it was queued again at {on_disk.get('updated_at')!r}"
    next_try = on_disk.get("next_try_at")
    if isinstance(next_try, str) and parse_time(next_try) > datetime.now(timezone.utc) + CLOCK_SLACK:
        return state, f"its next try is at {next_try}"
    return state, None


class JobOutput:
    """Points fds 1 and 2 (and so sys.stdout/stderr) at the job's log for one attempt,
    so C extensions and child processes write there too; between jobs, at /dev/null.

    A job's log is made only once it prints: each file made is an inode, the dearest part
    of a job's file work (benchmarks/README.md), and a rename is a file operation too. A
    first attempt's output goes to the worker's scratch file (logs/.out-<pid>, made once,
    emptied for each job), renamed logs/<id>.log once it is found written to: by the
    flusher, within a progress interval of the first print, and at the latest when the
    attempt ends, before its outcome is written, so whoever sees the job ended finds all
    it printed under its name. A job that prints nothing costs no file operation at all.
    What a worker that died left in its scratch file is made part of the log of the job
    it ran by whoever saw it die (the local executor, or a manager adopting the job:
    SpoolDir.bury_worker), before that job runs again."""

    def __init__(self, spool: SpoolDir) -> None:
        self.spool = spool
        self.devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        self.spare = scratch_log(os.getpid())
        self.scratch: int | None = None  # its descriptor while it is not a job's log
        self.unpublished: str | None = None  # the job whose output it takes, not yet named <id>.log
        self.mutex = threading.Lock()  # the attempt's thread and the flusher both publish

    @contextlib.contextmanager
    def to(self, status: JobStatus) -> Iterator[None]:
        fd = self._open(status)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        if fd != self.scratch:
            os.close(fd)
        try:
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
            self.publish(ended=True)
            os.dup2(self.devnull, 1)
            os.dup2(self.devnull, 2)

    def _open(self, status: JobStatus) -> int:
        folder = self.spool.log_folder
        try:
            if status.attempt == 1 and not folder.has(f"{status.id}.log"):
                try:
                    if self.scratch is not None and os.fstat(self.scratch).st_nlink == 0:
                        os.close(self.scratch)  # taken away: a new one is made
                        self.scratch = None
                    if self.scratch is None:
                        self.scratch = folder.open_append(self.spare, self.spool.owners, self.spool.file_mode)
                    os.ftruncate(self.scratch, 0)
                    with self.mutex:
                        self.unpublished = status.id
                    return self.scratch
                except (OSError, ValueError) as exc:  # no scratch file: the log is made at once
                    log.warning("job %s: its worker's scratch file cannot be used (%s)", status.id, exc)
                    if self.scratch is not None:
                        os.close(self.scratch)
                        self.scratch = None
            fd = self.spool.open_log(status.id)
        except (OSError, ValueError) as exc:
            log.error("job %s: cannot open its log (%s); its output is dropped", status.id, exc)
            return os.dup(self.devnull)
        if status.attempt > 1:
            with contextlib.suppress(OSError):
                os.write(fd, attempt_header(status))
        return fd

    def publish(self, ended: bool = False) -> None:
        """Name the attempt's output logs/<id>.log if it printed. Once it ``ended``, output
        that cannot be named so (the scratch file was taken away, say) is copied there:
        the next job must not empty it."""
        with self.mutex:
            job_id, scratch = self.unpublished, self.scratch
            if job_id is None or scratch is None:
                return
            folder = self.spool.log_folder
            try:
                if os.fstat(scratch).st_size == 0:
                    if ended:
                        self.unpublished = None  # it printed nothing: the file stays the worker's
                    return
                os.rename(self.spare, f"{job_id}.log", src_dir_fd=folder.fd, dst_dir_fd=folder.fd)
            except OSError as exc:
                if not ended:
                    return  # tried again on the flusher's next wake-up, and at the end
                log.error("job %s: cannot name its log (%s); copying it there", job_id, exc)
                self._copy_to_log(job_id, scratch)
            self.unpublished = self.scratch = None
            os.close(scratch)  # fds 1 and 2 go on writing to it until the attempt's end

    def _copy_to_log(self, job_id: str, scratch: int) -> None:
        try:
            self.spool.append_to_log(job_id, scratch, os.fstat(scratch).st_size)
            self.spool.log_folder.unlink(self.spare)
        except (OSError, ValueError) as exc:
            log.error("job %s: its output is dropped (%s)", job_id, exc)


class Checkpoints:
    """The job's checkpoint folder around an attempt (pool/checkpoints.py): made before a
    command's (it writes $POOL_CHECKPOINT itself) or a member's (she may not make one);
    removed once the job succeeded (run again, it starts afresh); a command's that stayed
    empty is removed."""

    def __init__(self, book: CheckpointBook) -> None:
        self.book = book

    def before(self, status: JobStatus, uid: int | None) -> None:
        if status.spec.command is None and uid is None:
            return  # a task makes its folder on its first save, if it ever saves
        try:
            self.book.make(status.id, uid)
        except OSError as exc:  # its saves fail, saying why; the job may not need them
            log.warning("job %s: cannot make its checkpoint folder (%s)", status.id, exc)

    def after(self, status: JobStatus, verdict: Verdict) -> None:
        try:
            if isinstance(verdict, Succeeded):
                self.book.remove(status.id)
            elif status.spec.command is not None:
                self.book.drop_if_empty(status.id)
        except OSError as exc:
            log.warning("job %s: cannot remove its checkpoint (%s)", status.id, exc)


def detach_stdio(label: str) -> None:
    """Jobs get no stdin; their output goes to their log, never the manager's terminal.
    The process's own log lines keep going to the manager's stderr through a copy of it."""
    saved = os.dup(2)
    # Text a job hands us (an exception's message, a file name) may not encode: escaped,
    # never a reason for the worker itself to fail.
    handler = logging.StreamHandler(os.fdopen(saved, "w", buffering=1, errors="backslashreplace"))
    handler.setFormatter(logging.Formatter(f"%(asctime)s {label} %(process)d %(levelname)s %(message)s"))
    logging.getLogger("pool").addHandler(handler)
    null_in = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_in, 0)
    os.close(null_in)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False, errors="backslashreplace")
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False, errors="backslashreplace")


def become_runner(close_fds: tuple[int, ...], sys_path: tuple[str, ...]) -> None:
    """What a process that runs attempts is, whatever runs it: the leader of its own
    process group (a stop signals the group), deaf to the terminal's Ctrl-C (its manager
    decides when jobs stop), a subreaper (what a job leaves behind comes back to it), with
    the manager's import path, holding none of the descriptors it must not keep."""
    if os.getpgrp() != os.getpid():
        os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for fd in close_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    become_subreaper()
    for entry in reversed(sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)


class Orders:
    """What the manager sent, in the order sent, read by a thread of its own: attempts to
    run, queued for the worker, and take-backs of ones sent ahead, answered at once, even
    while the attempt before runs (Skipped, TAKEN_BACK), so a job sent ahead to a worker
    busy for hours runs on the next worker free instead (pool/local.py). A take-back of
    an attempt already begun comes too late and is dropped."""

    def __init__(self, conn: Connection, send: Callable[[bytes], None]) -> None:
        self.conn = conn
        self.send = send
        self.pending: deque[msg.RunAttempt] = deque()
        self.closed = False
        self.ready = threading.Condition(threading.Lock())
        threading.Thread(target=self._read, name="pool-orders", daemon=True).start()

    def next(self) -> msg.RunAttempt:
        """The next attempt; blocks until there is one. Raises EOFError once the manager
        is gone or closed the pipe (a stop): then nothing more begins, not even what it
        sent ahead."""
        with self.ready:
            while True:
                while not self.pending and not self.closed:
                    self.ready.wait()
                if self.closed:
                    raise EOFError("the manager closed the pipe")
                # What the manager sent before this moment is heard first: a take-back of
                # the attempt sent ahead (a drain asks for one) may still be in the pipe,
                # unread by the thread; the attempt must not begin before it is (seen in
                # CI under load: test_a_drain_lets_running_attempts_end_and_begins_nothing_more).
                if not self.conn.poll(0):
                    return self.pending.popleft()
                self.ready.wait(0.01)

    def _read(self) -> None:
        while True:
            try:
                order = msg.decode_order(self.conn.recv_bytes())
            except (EOFError, OSError):
                with self.ready:
                    self.closed = True
                    self.ready.notify()
                return
            with self.ready:
                if isinstance(order, msg.RunAttempt):
                    self.pending.append(order)
                    self.ready.notify()
                    continue
                taken = next((o for o in self.pending if (o.job_id, o.attempt) == (order.job_id, order.attempt)),
                             None)
                if taken is None:
                    continue  # begun already: too late
                self.pending.remove(taken)
            try:
                self.send(msg.encode_reply(msg.Skipped(order.job_id, order.attempt, State.QUEUED, msg.TAKEN_BACK)))
            except OSError:
                pass  # the manager is gone


def worker_main(conn: Connection, config: WorkerConfig, close_fds: tuple[int, ...] = ()) -> None:
    """Entry point of a worker process: run attempts from the manager until the pipe closes."""
    if config.cwd:
        os.chdir(config.cwd)  # its forkserver was started elsewhere (pool/importpath.py)
    become_runner(close_fds, config.sys_path)
    detach_stdio("worker")
    sending = threading.Lock()  # the attempt's thread, the flusher's and the orders' all send

    def send(data: bytes) -> None:
        with sending:
            conn.send_bytes(data)

    worker = Worker(config, send)
    try:
        send(msg.encode_reply(msg.Ready()))  # set up: a stop of our group reaches us now
    except OSError:
        worker.close()
        return
    orders = Orders(conn, send)
    while True:
        try:
            order = orders.next()
        except EOFError:
            worker.close()  # every attempt it ran was heard of
            return  # the manager is gone or told us to stop
        reply = worker.run(order)
        try:
            send(msg.encode_reply(reply))
        except OSError:
            # The manager died: the outcome is on disk for the next one, and the lock
            # file stays, whose marker says the attempt began (its outcome may be in
            # the reply alone, a full disk having refused it).
            return
