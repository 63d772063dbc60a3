"""``pool worker``: a Celery worker whose one task is to run pool attempts on this machine.

    pool worker --broker URL --tasks M [--allow-commands] [--slots N] [--name NAME] [--workdir DIR]
      = celery worker (prefork, N processes, queues pool.task.<M>... [pool.commands], JSON only)
        + a thread that announces it (pool:worker:<name>: its slots and what it serves)
      each "pool.attempt" --> Supervisor: claim the token, run pool.scaleout.runner in a
        session of its own, tie it by a lifeline, stream what it says and prints to the hub,
        renew the lease, look for a cancel, and say how it ended

A message is checked before anything runs: JSON only (Celery refuses any other content
type), a token, a job document that parses, a task of a module this worker serves, a
command only with --allow-commands. The job runs in ``--workdir`` (its own per attempt),
never in the hub's spool, which this machine need not see.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import select
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
import redis

from pool import messages as msg
from pool.attempt import WorkerConfig
from pool.procs import describe_exit, open_pidfd, signal_group
from pool.progress import hook_tqdm
from pool.tasks import TaskModuleError, load_task_modules

from . import protocol as p
from .runner import run_attempt_here

log = logging.getLogger("pool.worker")

LOOK_EVERY = 0.1  # seconds between a supervisor's looks at its runner, its cancel flag, its lease
LOG_EVERY = 0.25  # seconds output waits before it is sent (or LOG_BYTES of it)
LOG_BYTES = 256 * 1024
DRAIN = 2.0  # seconds the output of an attempt whose runner has exited is read on


@dataclass(frozen=True)
class WorkerOptions:
    broker: str
    name: str
    slots: int
    task_modules: tuple[str, ...]
    allow_commands: bool
    workdir: str
    lease: float = p.LEASE_TTL  # seconds

    def queues(self) -> list[str]:
        return [p.task_queue(m) for m in self.task_modules] + ([p.COMMANDS_QUEUE] if self.allow_commands else [])

    def announcement(self) -> bytes:
        return orjson.dumps({"name": self.name, "slots": self.slots, "tasks": list(self.task_modules),
                             "commands": self.allow_commands, "host": socket.gethostname(), "pid": os.getpid()})


OPTIONS: WorkerOptions | None = None  # this worker's, set before Celery forks its processes
# Each process's own clients of the broker (made after the fork): one for what it says,
# one for its blocking wait on a cancel.
_clients: dict[str, redis.Redis] = {}


def connection(purpose: str = "saying") -> redis.Redis:
    if purpose not in _clients:
        assert OPTIONS is not None
        _clients[purpose] = p.connect(OPTIONS.broker)
    return _clients[purpose]


def refusal(job: Any, options: WorkerOptions) -> str | None:
    """Why this worker must not run the job, or None."""
    task = job.spec.task
    if task is None:
        return None if options.allow_commands else "this worker does not run commands (--allow-commands)"
    module = task.partition(":")[0]
    return None if module in options.task_modules else f"this worker does not serve task module {module!r}"


def run_attempt(message: Any) -> None:
    """The Celery task: one attempt, from its claim to its end."""
    assert OPTIONS is not None
    db = connection()
    try:
        token, job = p.checked_message(message)
    except ValueError as exc:
        log.error("refused a message: %s", exc)
        return
    why = refusal(job, OPTIONS)
    if why is not None:
        try:
            emit(db, token, "skipped", orjson.dumps({"why": why}))
        except redis.RedisError as exc:
            log.error("attempt %s: could not say why it was not run (%s)", token, exc)
        return
    claimed = db.eval(p.CLAIM, 2, p.attempt_key(token), p.lease_key(token), OPTIONS.name,
                      int(OPTIONS.lease * 1000))
    if claimed != b"claimed":
        log.info("attempt %s of job %s not run: %s", token, job.id, claimed)
        return  # sent twice, or cancelled before it began: whoever knows says so
    Supervisor(db, token, job, OPTIONS).run()


def emit(db: redis.Redis, token: str, kind: str, data: bytes, offset: int | None = None) -> None:
    """Say it on the attempt's stream. Raises RedisError (a broker out of reach)."""
    assert OPTIONS is not None
    fields: dict[str, str | bytes | int] = {"kind": kind, "data": data, "worker": OPTIONS.name}
    if offset is not None:
        fields["offset"] = offset
    with db.pipeline(transaction=False) as pipe:
        pipe.xadd(p.events_key(token), fields)  # type: ignore[arg-type]
        pipe.xadd(p.WAKE, {"token": token}, maxlen=p.WAKE_KEEP, approximate=True)
        pipe.execute()


class CancelListener:
    """Hears the hub's cancel of an attempt the moment it is said (a blocking pop of the
    attempt's cancel list, in a thread) and wakes its supervisor's wait through a pipe:
    a kill is carried out within milliseconds, not at the supervisor's next look at the
    flag, 0.1 s on (benchmarks/scaleout.py). The look stays, should this not hear it (a
    broker out of reach)."""

    def __init__(self, token: str) -> None:
        self.key = p.cancel_key(token)
        self.wake_r, self.wake_w = os.pipe()
        self.ended = threading.Event()
        # The pipe is closed by the last of the two to be done with it: the supervisor, or
        # a thread still blocked when the attempt ended (a broker gone: up to its socket's
        # timeout), which may yet write to it.
        self.lock = threading.Lock()
        self.users = 2
        self.thread = threading.Thread(target=self._listen, name="pool-cancel", daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        try:
            db = connection("waiting for a cancel")
            while not self.ended.is_set():
                try:
                    said = db.blpop([self.key], timeout=1)
                except redis.RedisError:
                    self.ended.wait(1.0)
                    continue
                if said is not None:
                    if not self.ended.is_set():
                        os.write(self.wake_w, b"!")
                    return
        finally:
            self.done()

    def heard(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            os.read(self.wake_r, 64)

    def close(self, db: redis.Redis) -> None:
        """Stop listening: a word of our own on the list ends the thread's wait at once."""
        self.ended.set()
        if self.thread.is_alive():
            with contextlib.suppress(redis.RedisError), db.pipeline(transaction=False) as pipe:
                pipe.rpush(self.key, b"")
                pipe.pexpire(self.key, 60_000)
                pipe.execute()
            self.thread.join(0.5)
        self.done()

    def done(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users == 0:
                os.close(self.wake_r)
                os.close(self.wake_w)


class Supervisor:
    """One attempt's runner, watched from start to end."""

    def __init__(self, db: redis.Redis, token: str, job: Any, options: WorkerOptions) -> None:
        self.db = db
        self.token = token
        self.job = job
        self.options = options
        self.began = False
        self.offset = 0  # bytes of output sent so far
        self.pending = b""
        self.sent_at = time.monotonic()
        self.renewed_at = time.monotonic()
        self.stop_reason: str | None = None
        self.kill_at: float | None = None
        self.parent = os.getppid()
        self.unsaid: list[tuple[str, bytes, int | None]] = []  # in order, while the broker is out of reach

    def say(self, kind: str, data: bytes, offset: int | None = None) -> None:
        """Tell the hub, in order; what the broker cannot take now is said once it can."""
        self.unsaid.append((kind, data, offset))
        self.say_unsaid()

    def say_unsaid(self) -> bool:
        while self.unsaid:
            try:
                emit(self.db, self.token, *self.unsaid[0])
            except redis.RedisError:
                return False
            self.unsaid.pop(0)
        return True

    def run(self) -> None:
        folder = Path(self.options.workdir) / f"attempt-{self.token}"
        folder.mkdir(parents=True, exist_ok=True)
        config = WorkerConfig(spool=str(folder), task_modules=self.options.task_modules,
                              allow_commands=self.options.allow_commands, sys_path=tuple(sys.path),
                              name=self.options.name, cwd=str(folder))
        messages_r, messages_w = os.pipe()
        output_r, output_w = os.pipe()
        lifeline_r, lifeline_w = os.pipe()
        order = msg.RunAttempt(here(self.job))
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # nothing of ours is written twice by the child
        pid = os.fork()
        if pid == 0:  # the runner (runner.py): it never returns here
            code = 70
            try:
                os.setsid()
                os.chdir(folder)
                for fd in (messages_r, output_r, lifeline_w):
                    os.close(fd)
                os.dup2(output_w, 1)
                os.dup2(output_w, 2)
                os.close(output_w)
                run_attempt_here(config, order, messages_w, lifeline_r)
                code = 0
            except BaseException:
                with contextlib.suppress(BaseException):
                    os.write(2, traceback.format_exc().encode(errors="replace"))
            finally:
                os._exit(code)
        for fd in (messages_w, output_w, lifeline_r):
            os.close(fd)
        proc = Forked(pid)
        try:
            self.watch(proc, Connection(messages_r), output_r)
        finally:
            proc.close()
            os.close(lifeline_w)  # the lifeline: anything of the attempt left dies with it
            os.close(output_r)
            shutil.rmtree(folder, ignore_errors=True)

    def watch(self, proc: Forked, conn: Connection, output: int) -> None:
        listener = CancelListener(self.token)
        try:
            self.watch_heeding(proc, conn, output, listener)
        finally:
            listener.close(self.db)

    def watch_heeding(self, proc: Forked, conn: Connection, output: int, listener: CancelListener) -> None:
        messages_open = output_open = True
        exited_at: float | None = None
        looked_at = 0.0
        while messages_open or output_open or proc.poll() is None:
            if proc.poll() is not None:
                exited_at = exited_at or time.monotonic()
                if time.monotonic() - exited_at >= DRAIN:  # a process that left its group holds the pipes
                    break
            waited: list[Any] = [f for f, is_open in ((conn, messages_open), (output, output_open)) if is_open]
            waited.append(listener.wake_r)
            if exited_at is None and proc.pidfd is not None:
                # Its exit ends the wait too: with both pipes at their end but the runner
                # not reaped yet, a wait on the pipes alone slept a whole look (now and
                # then 100 ms of a tiny job's 5).
                waited.append(proc.pidfd)
            ready, _, _ = select.select(waited, [], [], LOOK_EVERY)
            if listener.wake_r in ready:
                listener.heard()
                looked_at = 0.0  # the flag is looked at now
            if conn in ready:
                messages_open = self.pass_message(conn)
            if output in ready:
                output_open = self.take_output(output)
            self.send_output(force=not output_open)
            if time.monotonic() - looked_at >= LOOK_EVERY:  # not at every read of a chatty job's output
                looked_at = time.monotonic()
                self.look_after(proc)
        self.send_output(force=True)
        how = describe_exit(proc.returncode)
        self.say("exit", orjson.dumps({"how": how, "began": self.began, "stopped": self.stop_reason}))
        deadline = time.monotonic() + self.options.lease
        while not self.say_unsaid() and time.monotonic() < deadline:  # the end is said, if the broker comes back
            time.sleep(LOOK_EVERY)

    def pass_message(self, conn: Connection) -> bool:
        """The runner's next message, said to the hub; False once it says no more."""
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return False
        if isinstance(msg.decode_reply(data), msg.Started):
            self.began = True
        self.say("message", data)
        return True

    def take_output(self, output: int) -> bool:
        """What the runner printed, kept to be sent; False at its end."""
        chunk = os.read(output, 1 << 16)
        self.pending += chunk
        return bool(chunk)

    def send_output(self, force: bool = False) -> None:
        if self.pending and (force or len(self.pending) >= LOG_BYTES or time.monotonic() - self.sent_at >= LOG_EVERY):
            for start in range(0, len(self.pending), LOG_BYTES):
                piece = self.pending[start:start + LOG_BYTES]
                self.say("log", piece, self.offset)
                self.offset += len(piece)
            self.pending = b""
            self.sent_at = time.monotonic()

    def look_after(self, proc: Forked) -> None:
        """The lease renewed, a cancel carried out, the attempt stopped when its worker is
        gone or the lease cannot be kept (then another may run it: this one must not)."""
        now = time.monotonic()
        self.say_unsaid()
        lease = self.options.lease
        if now - self.renewed_at >= lease * p.RENEW_SHARE:
            try:
                if self.db.eval(p.RENEW, 2, p.lease_key(self.token), p.attempt_key(self.token), self.options.name,
                                int(lease * 1000), p.ATTEMPT_KEEP * 1000):
                    self.renewed_at = now
            except redis.RedisError as exc:
                log.warning("attempt %s: cannot renew its lease (%s)", self.token, exc)
        if self.stop_reason is None:
            try:
                asked: list[Any] = list(self.db.hmget(p.attempt_key(self.token), ["cancel", "grace"]))
            except redis.RedisError:
                asked = [None, None]
            if asked[0] is not None:
                self.stop(proc, bytes(asked[0]).decode(), float(asked[1] or 0))
            elif now - self.renewed_at >= lease * p.SELF_FENCE_SHARE:
                self.stop(proc, "lease", 0.0)
            elif os.getppid() != self.parent:
                self.stop(proc, "worker gone", 0.0)
        elif self.kill_at is not None and now >= self.kill_at and proc.poll() is None:
            signal_group(proc.pid, signal.SIGKILL)
            self.kill_at = None

    def stop(self, proc: Forked, reason: str, grace: float) -> None:
        self.stop_reason = reason
        signal_group(proc.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        self.kill_at = time.monotonic() + grace if grace > 0 else None


class Forked:
    """The runner process, seen as a Popen is (``pid``, ``poll``, ``returncode``)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.pidfd = open_pidfd(pid)  # readable once it exits (Linux 5.3+), or None

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                done, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -signal.SIGKILL  # reaped elsewhere: gone
                return self.returncode
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def here(job: Any) -> Any:
    """The job as this machine runs it: a command in the worker's environment (and the
    job's own ``env``) and in the attempt's folder, not in the submitter's environment and
    directory, which are of the hub's machine (and kept there: status/<id>.env)."""
    if job.spec.command is None:
        return job
    return dataclasses.replace(job, spec=dataclasses.replace(job.spec, caller_env=None, cwd=None))


def announce_forever(options: WorkerOptions, stopped: threading.Event) -> None:
    db = p.connect(options.broker)
    while not stopped.is_set():
        try:
            db.set(p.worker_key(options.name), options.announcement(), px=int(p.WORKER_TTL * 1000))
            stopped.wait(p.ANNOUNCE_EVERY)
        except redis.RedisError as exc:
            log.warning("cannot announce this worker (%s)", exc)
            stopped.wait(RECONNECT_EVERY)  # announced again as soon as the broker is back
    with contextlib.suppress(redis.RedisError):
        db.delete(p.worker_key(options.name))


def ready_for_attempts(**_: Any) -> None:
    """What every runner a Celery process forks needs, imported once by the process: the
    served task modules and tqdm's hook. Each runner imported them itself, 8 ms an attempt
    (tqdm alone; benchmarks/scaleout.py). A module that fails here is imported again by
    each attempt, which reports its error as a local worker does."""
    assert OPTIONS is not None
    with contextlib.suppress(TaskModuleError):
        load_task_modules(OPTIONS.task_modules)
    hook_tqdm()


RECONNECT_EVERY = 0.25  # seconds between two tries to reach a broker that went away


def reconnecting_consumer() -> type:
    """Celery's consumer, trying to reach a broker that went away every RECONNECT_EVERY
    seconds: Celery's own waits 2 s, then 4 s, then 6 s..., so a broker restarted after 3 s
    had its queues read again only 3 s later (the issue: a new job runs within 2 s)."""
    from celery.worker.consumer import Consumer
    from celery.worker.state import maybe_shutdown

    class Reconnecting(Consumer):  # type: ignore[misc]
        def ensure_connected(self, conn: Any) -> Any:
            def trying_again(exc: Exception, interval: float) -> None:
                log.warning("cannot reach the broker (%s): trying again", exc)

            conn = conn.ensure_connection(trying_again, None, interval_start=RECONNECT_EVERY, interval_step=0,
                                          interval_max=RECONNECT_EVERY, callback=maybe_shutdown)
            self.first_connection_attempt = False
            return conn

    return Reconnecting


def make_app(options: WorkerOptions) -> Any:
    # Acknowledged once run: a worker then holds no more messages than it has slots (an
    # early ack let one busy slot fetch the next job, which waited there while the other
    # machine idled). One redelivered (a worker killed) finds its token claimed, and runs
    # nothing.
    app = p.celery_app(options.broker, task_ignore_result=True, worker_prefetch_multiplier=1,
                       task_acks_late=True, task_reject_on_worker_lost=False, worker_hijack_root_logger=False,
                       worker_send_task_events=False, task_send_sent_event=False,
                       worker_consumer=reconnecting_consumer())
    app.task(name=p.TASK_NAME)(run_attempt)
    from celery.signals import worker_process_init

    worker_process_init.connect(ready_for_attempts, weak=False)
    return app


def serve(options: WorkerOptions) -> None:
    """Run the worker until it is stopped (SIGTERM, Ctrl-C)."""
    global OPTIONS
    OPTIONS = options
    Path(options.workdir).mkdir(parents=True, exist_ok=True)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="pool worker: %(message)s")
    stopped = threading.Event()
    announcer = threading.Thread(target=announce_forever, args=(options, stopped), name="pool-announce", daemon=True)
    announcer.start()
    app = make_app(options)
    try:
        app.worker_main(["worker", "-Q", ",".join(options.queues()), "-c", str(options.slots),
                         "-n", f"{options.name}@%h", "--without-mingle", "--without-gossip", "--without-heartbeat",
                         "-P", "prefork", "--loglevel", "WARNING"])
    finally:
        stopped.set()
        announcer.join(5)
