"""A second engine, the proof that the executor seam hides where attempts run:
``pool serve --engine relay_engine:RelayExecutor``.

Each attempt runs in a fresh child process (``relay_child.py``) that never touches the
spool: it is handed the job as JSON, reports its start, progress and verdict as
messages (pool/detached.py), and its output goes down a pipe. The manager writes all of
it (``running``, progress, the log, the outcome), as a hub will for a remote engine. It
keeps nothing on disk: a previous manager's attempt that the status says is running is
reported lost (counted), one that says queued never began.

    manager --start(job)--> RelayExecutor --spawn--> relay_child  (a session of its own)
            <--Began, Progress, Output, Ended--  <--messages, output pipe, pidfd--
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from pool import messages as msg
from pool.detached import heard
from pool.engines import EngineSettings
from pool.executor import (
    Began,
    Completed,
    Ended,
    ExecutorEvent,
    Lost,
    NotBegun,
    Outcome,
    Output,
    Progress,
    Start,
    Stopped,
    Stopping,
    StopReason,
    WorkerDied,
)
from pool.model import JobStatus, State
from pool.procs import GroupStop, describe_exit, pause_group

CHILD = Path(__file__).with_name("relay_child.py")


@dataclass
class Child:
    """One attempt's process, and what it said so far."""

    job: JobStatus
    proc: subprocess.Popen[bytes]
    conn: Connection  # its messages
    output: int  # the read end of its stdout and stderr
    pidfd: int
    began: bool = False
    outcome: Outcome | None = None  # what its last message said
    stop: GroupStop | None = None
    stop_reason: StopReason | None = None
    paused: bool = False  # its session is stopped (`pool pause`)
    exited: bool = False
    output_done: bool = False
    messages_done: bool = False
    events: list[ExecutorEvent] = field(default_factory=list)


class RelayExecutor:
    leaves_running = False  # a child reports to this manager alone: it goes with it

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.workers = settings.workers
        self.config = orjson.dumps(settings.worker.to_dict()).decode()
        self.children: dict[str, Child] = {}
        self.events: list[ExecutorEvent] = []

    def open(self, wake: Callable[[], None]) -> None:
        pass  # nothing to start before the first attempt

    def close(self, leave_running: bool = False) -> None:
        for child in self.children.values():  # nothing of ours outlives the manager
            with_group_killed(child)
            self._release(child)

    def resize(self, workers: int) -> None:
        self.workers = workers

    def room(self, first: JobStatus) -> int:
        return self.workers - len(self.children)

    def start(self, job: JobStatus, now: float) -> None:
        messages_r, messages_w = os.pipe()
        output_r, output_w = os.pipe()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(self.settings.worker.sys_path))
        proc = subprocess.Popen([sys.executable, str(CHILD), str(messages_w), self.config],
                                stdin=subprocess.PIPE, stdout=output_w, stderr=output_w, pass_fds=(messages_w,),
                                start_new_session=True, env=env, close_fds=True)
        os.close(messages_w)
        os.close(output_w)
        assert proc.stdin is not None
        proc.stdin.write(msg.RunAttempt(job).encode())
        proc.stdin.close()
        os.set_blocking(output_r, False)
        self.children[job.id] = Child(job, proc, Connection(messages_r), output_r, os.pidfd_open(proc.pid))

    def stop(self, job_id: str, reason: StopReason, grace: float, now: float) -> Stopping | None:
        child = self.children.get(job_id)
        if child is None:
            return None
        if child.stop is None:
            child.stop_reason = reason
            # Not begun: it must not, so it gets no grace to begin in.
            child.stop = GroupStop.begin(child.proc.pid, grace if child.began else 0.0, now, f"job {job_id}",
                                         paused=child.paused)
        return Stopping(began=child.began, kill_at=child.stop.kill_at)

    def take_back(self, job_id: str) -> bool:
        return False  # nothing is sent ahead: a child begins what it is handed

    def pause(self, job_id: str) -> bool:
        child = self.children.get(job_id)
        if child is None or not child.began or child.stop is not None:
            return False
        child.paused = child.paused or pause_group(child.proc.pid)
        return child.paused

    def resume(self, job_id: str) -> bool:
        child = self.children.get(job_id)
        if child is None:
            return False
        if child.paused:
            child.paused = False
            os.killpg(child.proc.pid, signal.SIGCONT)
        return True

    def recover(self, job: JobStatus, now: float) -> bool:
        if job.state not in (State.RUNNING, State.PAUSED):
            return False  # the manager writes running when an attempt begins: this one never did
        self.events.append(Ended(job.id, job.attempt, Lost("its relay child went with the manager")))
        return True

    def holds(self, job_id: str) -> bool:
        return job_id in self.children

    def hosts(self) -> list[dict[str, Any]] | None:
        return None

    def trouble(self) -> str | None:
        return None

    def busy(self) -> bool:
        return bool(self.children)

    def running_ids(self) -> list[str]:
        return list(self.children)

    def waitables(self) -> list[Any]:
        objects: list[Any] = []
        for child in self.children.values():
            objects += [o for o, done in ((child.conn, child.messages_done), (child.output, child.output_done),
                                          (child.pidfd, child.exited)) if not done]
        return objects

    def next_deadline(self, now: float) -> float | None:
        looks = [c.stop.next_look(now) for c in self.children.values() if c.stop is not None]
        return min(looks) if looks else None

    def collect(self, ready: list[Any], now: float) -> list[ExecutorEvent]:
        for child in list(self.children.values()):
            self._read(child, now)
            if not child.exited and child.proc.poll() is not None:
                child.exited = True
            if child.stop is not None:
                child.stop.advance(now)
            if child.exited and child.output_done and child.messages_done and (
                    child.stop is None or child.stop.advance(now)):
                self._end(child)
        events, self.events = self.events, []
        return events

    def _read(self, child: Child, now: float) -> None:
        while not child.messages_done and child.conn.poll():
            try:
                self._on_message(child, msg.decode_reply(child.conn.recv_bytes()), now)
            except (EOFError, OSError):
                child.messages_done = True
        while not child.output_done:
            try:
                data = os.read(child.output, 1 << 16)
            except BlockingIOError:
                break
            if not data:
                child.output_done = True
            else:
                self.events.append(Output(child.job.id, child.job.attempt, data))

    def _on_message(self, child: Child, reply: msg.Reply, now: float) -> None:
        job = child.job
        if isinstance(reply, msg.Started):
            child.began = True
            self.events.append(Began(job.id, job.attempt, now, Start(reply.started_at, reply.pid)))
        elif isinstance(said := heard(reply, job), Progress):
            self.events.append(said)
        elif said is not None:
            child.outcome = said

    def _end(self, child: Child) -> None:
        del self.children[child.job.id]
        self._release(child)
        outcome: Outcome
        if child.outcome is not None and not (child.stop_reason is not None and isinstance(child.outcome, Completed)
                                              and not child.began):
            outcome = child.outcome  # it ended on its own, even while being stopped: that stands
        elif child.stop_reason is not None:
            outcome = Stopped(child.stop_reason, child.began)
        elif not child.began:
            outcome = NotBegun(None, f"relay child {child.proc.pid} {describe_exit(child.proc.returncode)} unbegun")
        else:
            outcome = WorkerDied(f"relay child {child.proc.pid} {describe_exit(child.proc.returncode)}", True)
        self.events.append(Ended(child.job.id, child.job.attempt, outcome))

    def _release(self, child: Child) -> None:
        child.conn.close()
        for fd in (child.output, child.pidfd):
            try:
                os.close(fd)
            except OSError:
                pass


def with_group_killed(child: Child) -> None:
    try:
        os.killpg(child.proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    child.proc.wait()
