"""The seam between the manager and where attempts run.

    manager --open(wake) / start(job) / stop(id, reason, grace) / recover(job)--> Executor
            <--collect(): Began, Progress, Output, Recorded, Ended--------------- (local
               worker processes, pool/local.py; another engine, chosen by name in
               pool/engines.py)

The manager decides *what* runs and *when* (queue, priorities, timeouts, kill requests,
retries); an executor decides *where*, and reports back, as events, everything the
manager needs to keep the spool true:

- ``Began``: an attempt starts now; its timeout counts from ``at``. An executor whose side
  writes nothing to the spool gives ``started`` too, and the manager writes ``running``.
- ``Progress`` and ``Output``: how far it is, what it printed; the manager writes them
  into its status and its log. (Local workers write both themselves, on this machine:
  they send neither, and tell the state changes they wrote as ``Recorded``.)
- ``Ended``: the attempt is over and nothing of it runs any more (a local one's whole
  process group is gone), with how it ended. Every way an attempt can end says whether
  its code began, which is what makes it count: the manager reads that from the event,
  never from where the attempt ran.

An attempt a previous manager started (it died, or was restarted) is handed to
``recover``: the executor finds out whether it still runs (then it watches it and reports
its end like any other), whether it began and is gone (its end is reported at once), or
whether it never began (the manager queues it). Stopping one works the same for both.

An executor may wake the manager from a thread of its own (``wake``), or give it objects
to wait on (``waitables``: anything with a ``fileno()``, or a descriptor), or both.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .ledger import Transition
from .lifecycle import Verdict
from .model import JobStatus, State


class StopReason(str, enum.Enum):
    """Why the manager stopped an attempt (recorded before any signal is sent, so a
    stop is never mistaken for a crash)."""

    CANCEL = "cancel"
    TIMEOUT = "timeout"
    SHUTDOWN = "shutdown"


# ---------------------------------------------------------------- what an executor reports

@dataclass(frozen=True, slots=True)
class Start:
    """What a ``running`` status says of an attempt that the manager writes itself."""

    started_at: str
    pid: int | None = None  # its process, when it runs on this machine
    host: str | None = None  # the machine it runs on, when another (its worker's name)
    token: str | None = None  # what a new manager takes the attempt over by (``recover``)


@dataclass(frozen=True, slots=True)
class Began:
    """The attempt starts now (give or take its runner's last checks): its timeout counts
    from ``at`` (monotonic). ``started``: the manager is to write ``running``."""

    job_id: str
    attempt: int
    at: float
    started: Start | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """How far the attempt is: the manager writes it into the job's status."""

    job_id: str
    attempt: int
    fraction: float | None
    message: str | None


@dataclass(frozen=True, slots=True)
class Output:
    """What the attempt printed next: the manager appends it to the job's log."""

    job_id: str
    attempt: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Recorded:
    """State changes the executor's side wrote to the spool itself (local workers)."""

    transitions: tuple[Transition, ...]


# ---------------------------------------------------------------- how an attempt ended

@dataclass(frozen=True, slots=True)
class Completed:
    """Its code ran to its end. ``verdict``: what it made of it, for the manager to write
    (with the last ``progress`` reported, if any); None when the executor's side wrote it.
    ``why``: why its side could not write it, when it should have."""

    verdict: Verdict | None = None
    progress: Progress | None = None
    why: str | None = None
    began = True


@dataclass(frozen=True, slots=True)
class NotBegun:
    """Its code never began: its status said otherwise (``state``: None when unknown),
    or it could not start. ``later``: try it again only after a pause (the spool could
    not be written to record its start)."""

    state: State | None
    why: str
    later: bool = False
    began = False


@dataclass(frozen=True, slots=True)
class Stopped:
    """The manager stopped it for ``reason`` (and nothing of it runs any more)."""

    reason: StopReason
    began: bool


@dataclass(frozen=True, slots=True)
class WorkerDied:
    """What ran it died without a word (and nothing of it runs any more)."""

    how: str
    began: bool


@dataclass(frozen=True, slots=True)
class WorkerFailed:
    """What ran it failed (not the job's own code: a bug, an unusable spool)."""

    why: str
    began: bool


@dataclass(frozen=True, slots=True)
class Lost:
    """An attempt a previous manager started ended without an outcome (its worker died
    with that manager): it began."""

    how: str
    began = True


Outcome = Completed | NotBegun | Stopped | WorkerDied | WorkerFailed | Lost


@dataclass(frozen=True, slots=True)
class Ended:
    job_id: str
    attempt: int
    outcome: Outcome


ExecutorEvent = Began | Progress | Output | Recorded | Ended


@dataclass(frozen=True, slots=True)
class Stopping:
    """The answer to ``stop``: the executor holds the attempt and stops it. ``began``:
    whether it is known to run (else it was handed over and has not begun: it will not,
    once its status says it must not); ``kill_at``: when SIGKILL follows (monotonic)."""

    began: bool
    kill_at: float | None = None


class Executor(Protocol):
    # Whether its attempts can run on after the manager goes, for the next manager's
    # ``recover`` to take over (`pool stop --detach`).
    leaves_running: bool

    def open(self, wake: Callable[[], None]) -> None:
        """Get ready to take attempts; ``wake`` wakes the manager (from any thread)."""

    def close(self, leave_running: bool = False) -> None:
        """Release everything. Attempts still running are ended, or with
        ``leave_running`` (only when ``leaves_running``) left to run on, and nothing
        sent ahead of them begins."""

    def resize(self, workers: int) -> None:
        """Run up to ``workers`` attempts at a time from now on (`pool workers N`): fewer
        takes nothing new until that many run; a running attempt is never stopped for it.
        0 (the manager stops): nothing more begins, not even what was sent ahead."""

    def room(self, first: JobStatus) -> int:
        """How many more attempts it takes now, the first being ``first`` (the most urgent
        queued job). An executor that commits jobs to busy runners ahead of time must never
        make ``first`` wait behind one of lower priority: it takes such jobs back (they end
        ``NotBegun``, queued) and makes room for ``first``."""

    def start(self, job: JobStatus, now: float) -> None:
        """Run the job's current attempt (only when ``room(job)`` > 0). The copy is the
        status as the manager last wrote or read it: the attempt must not begin unless the
        job's status still says it is queued for it."""

    def stop(self, job_id: str, reason: StopReason, grace: float, now: float) -> Stopping | None:
        """Stop the job's attempt: SIGTERM (or its equivalent), SIGKILL after ``grace``,
        then report it ended. None when the job is not held here."""

    def take_back(self, job_id: str) -> bool:
        """Give back a job handed over whose attempt has not begun (one sent ahead to a
        busy runner): it ends ``NotBegun``, queued, uncounted. False when there is none
        to take back (it began, or was never sent ahead)."""

    def pause(self, job_id: str) -> bool:
        """Stop every process of the job's attempt (SIGSTOP, or its equivalent), and return
        once they all are: nothing of it writes until ``resume``. False when it holds no
        attempt of it that began, or cannot pause one (it then runs on as before)."""

    def resume(self, job_id: str) -> bool:
        """Continue an attempt ``pause`` stopped; False when it holds no such attempt."""

    def recover(self, job: JobStatus, now: float) -> bool:
        """Take over the attempt of a job a previous manager left not final: True when it
        runs or began (its end is reported as an ``Ended``), False when it never began."""

    def holds(self, job_id: str) -> bool:
        """Handed over (or recovered) and not yet ended."""

    def busy(self) -> bool:
        """Some attempt it started is running or being stopped (recovered ones aside:
        the manager may stop without waiting for them)."""

    def running_ids(self) -> list[str]:
        """The attempts it started that run now: what a stop of the manager stops."""

    def trouble(self) -> str | None:
        """What keeps it from running attempts now, in words (workers that cannot start,
        an engine it cannot reach), for `pool status` to show; None when nothing does."""

    def hosts(self) -> list[dict[str, Any]] | None:
        """The machines its attempts run on, for `pool workers` to list: each a dict with
        ``name``, ``slots``, ``busy`` (and what it serves); None when they run here."""

    def waitables(self) -> list[Any]:
        """What the manager's wait should wake on besides ``wake``."""

    def next_deadline(self, now: float) -> float | None:
        """When it wants to be collected next even if nothing wakes the manager."""

    def collect(self, ready: list[Any], now: float) -> list[ExecutorEvent]:
        """Everything that happened since the last call (``ready``: what of its
        ``waitables`` woke the manager)."""
