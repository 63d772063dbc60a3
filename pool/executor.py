"""The seam between the manager and where attempts run.

    manager --start(job) / stop(id, reason, grace)--> Executor --> local worker processes
            <--collect(): Began, Recorded, Ended------            (pool/local.py), or
                                                                   another engine later

The manager decides *what* runs and *when* (queue, priorities, timeouts, kill requests);
an executor decides *where*, and reports back what happened. Everything an executor says
is one of three events: an attempt began (timeouts count from then), its worker recorded
state changes, or it ended, with how, once nothing of it runs any more (its whole process
group is gone). Local worker processes are the first implementation; a remote engine
(Celery across machines, ../shared/SCALEOUT.md) implements the same protocol, and the
manager loop does not change.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from . import lifecycle
from .ledger import Transition
from .model import JobStatus, State
from .spool import SpoolDir


class StopReason(str, enum.Enum):
    """Why the manager stopped an attempt (recorded before any signal is sent, so a
    stop is never mistaken for a crash)."""

    CANCEL = "cancel"
    TIMEOUT = "timeout"
    SHUTDOWN = "shutdown"

    def outcome(self, now: str) -> Callable[[JobStatus], JobStatus]:
        """How a running attempt stopped for this reason ends (at ``now``)."""
        change = {StopReason.CANCEL: lifecycle.cancel, StopReason.TIMEOUT: lifecycle.time_out,
                  StopReason.SHUTDOWN: lifecycle.interrupt}[self]
        return lambda status: change(status, now)


@dataclass(frozen=True, slots=True)
class Began:
    job_id: str
    attempt: int
    at: float  # monotonic


@dataclass(frozen=True, slots=True)
class Recorded:
    transitions: tuple[Transition, ...]


# ---------------------------------------------------------------- how an attempt ended

@dataclass(frozen=True, slots=True)
class Finished:
    """It ran to its end; its outcome is written, or is ``unrecorded`` (write it)."""

    unrecorded: JobStatus | None = None
    why: str | None = None


@dataclass(frozen=True, slots=True)
class NotStarted:
    """It never began: its status said otherwise (``state``), or it could not start."""

    state: State | None
    why: str


@dataclass(frozen=True, slots=True)
class Stopped:
    """The manager stopped it (and its process group is gone)."""

    reason: StopReason


@dataclass(frozen=True, slots=True)
class Died:
    """Its worker died without a word (and its process group is gone)."""

    how: str


@dataclass(frozen=True, slots=True)
class Crashed:
    """Its worker failed (not the job's code); ``started``: had the job's code begun."""

    why: str
    started: bool


Outcome = Finished | NotStarted | Stopped | Died | Crashed


@dataclass(frozen=True, slots=True)
class Ended:
    job_id: str
    attempt: int
    outcome: Outcome


ExecutorEvent = Began | Recorded | Ended


class Executor(Protocol):
    def open(self) -> None:
        """Get ready to take attempts (start workers)."""

    def close(self) -> None:
        """Release everything; attempts still running are left to their fate."""

    def room(self) -> int:
        """How many more attempts it takes now."""

    def start(self, job: JobStatus, now: float) -> None:
        """Run the job's current attempt (only when ``room()`` > 0)."""

    def stop(self, job_id: str, reason: StopReason, grace: float, now: float) -> bool:
        """Stop the attempt running the job: SIGTERM, SIGKILL after ``grace``. False when
        the job is not running here (maybe handed over but not begun: cancel it where
        it waits, its status, and the worker will skip it)."""

    def holds(self, job_id: str) -> bool:
        """Handed over and not yet ended (running, or waiting to begin)."""

    def busy(self) -> bool:
        """Some attempt is running or being stopped."""

    def running_ids(self) -> list[str]: ...

    def waitables(self) -> list[Any]:
        """What the manager's wait should wake on (pipes, process sentinels)."""

    def next_deadline(self, now: float) -> float | None:
        """When it wants to be collected next even if nothing wakes the manager."""

    def collect(self, ready: list[Any], now: float) -> list[ExecutorEvent]:
        """Everything that happened since the last call."""


class Liveness(Protocol):
    """Whether a job's attempt is still running somewhere, asked by whoever did not start
    it (a manager adopting what a dead one left running). Locally: its lock is held."""

    def alive(self, job_id: str) -> bool: ...


class LockLiveness:
    """The local answer: the worker running a job holds the job's lock for its whole run."""

    def __init__(self, spool: SpoolDir) -> None:
        self.spool = spool

    def alive(self, job_id: str) -> bool:
        return self.spool.locks.is_leased(job_id)
