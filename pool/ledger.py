"""The one funnel for a job's state changes: lock, transition, write, event, hook.

    ledger.change(id, fn)  --flock status/<id>.lock--> read --fn--> lifecycle checks the
                           role --> write status/<id>.json --> Transition(s) --> hear()

Every role (manager, inline supervisor, worker, client) changes a job's state through a
Ledger of its own; only what it may do passes (``lifecycle.MAY``). What happened is told
to ``hear`` as Transitions, from the real state before and after: the manager's hook
appends them to events.jsonl and acts on them (queue a job that became ``queued``, forget
the requests of one that became final); a worker's sends them to its manager.

A status can pass through ``running`` without ``running`` ever being written (a worker
writes it only after a few milliseconds): such a write tells two transitions, the start
(at its ``started_at``) and the outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .lifecycle import Role, check_role, describe, passed_through_running
from .locks import LOCK_TIMEOUT
from .model import JobStatus, State
from .spool import SpoolDir


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change of one job, as it happened."""

    job_id: str
    before: State | None  # None: the job was new
    after: State
    attempt: int  # the attempt the change is about
    reason: str
    time: str
    status: JobStatus | None = None  # the status written, when the teller has it

    def event(self) -> dict[str, Any]:
        return {"time": self.time, "id": self.job_id, "from": self.before.value if self.before else None,
                "to": self.after.value, "attempt": self.attempt, "reason": self.reason}

    def to_dict(self) -> dict[str, Any]:
        doc = self.event()
        if self.status is not None and self.after is State.QUEUED:
            doc["status"] = self.status.to_dict()  # the manager queues it as written
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Transition:
        status = JobStatus.from_dict(doc["status"]) if "status" in doc else None
        return cls(job_id=doc["id"], before=State(doc["from"]) if doc["from"] else None, after=State(doc["to"]),
                   attempt=doc["attempt"], reason=doc["reason"], time=doc["time"], status=status)


def transitions_between(before: JobStatus | None, after: JobStatus, reason: str | None = None,
                        start_reason: str = "started") -> list[Transition]:
    """The state changes from ``before`` (as it was on disk) to ``after``; none when the
    state did not change (progress). A status written from ``queued`` to anything but
    ``running`` with a new ``started_at`` passed through ``running`` on the way."""
    if before is None:
        return [Transition(after.id, None, after.state, after.attempt, reason or describe(after), after.updated_at,
                           after)]
    changes = []
    state = before.state
    if state is State.QUEUED and passed_through_running(before, after):
        changes.append(Transition(after.id, State.QUEUED, State.RUNNING, before.attempt, start_reason,
                                  after.started_at or after.updated_at))
        state = State.RUNNING
    if after.state is not state or after.attempt != before.attempt:
        changes.append(Transition(after.id, state, after.state, before.attempt, reason or describe(after),
                                  after.updated_at, after))
    return changes


class Ledger:
    """Where one role makes its state changes."""

    def __init__(self, spool: SpoolDir, role: Role, hear: Callable[[Transition], None]) -> None:
        self.spool = spool
        self.role = role
        self.hear = hear

    def change(self, job_id: str, change: Callable[[JobStatus], JobStatus | None], reason: str | None = None,
               wait: float = LOCK_TIMEOUT) -> JobStatus | None:
        """Read, change and write one status under its lock; ``change`` returns None to
        leave it as it is. Returns the status written, or None. Raises JobNotFound,
        CorruptStatus, InvalidTransition, or JobBusy when the lock is not free within
        ``wait`` seconds (a live worker holds it while its job runs)."""
        with self.spool.locks.status_lock(job_id, timeout=wait) as lock_fd:
            before = self.spool.read_status(job_id)
            after = change(before)
            if after is None:
                return None
            self.record(before, after, reason, lock_fd=lock_fd)
            return after

    def record(self, before: JobStatus | None, after: JobStatus, reason: str | None = None,
               lock_fd: int | None = None, start_reason: str = "started") -> list[Transition]:
        """Write ``after`` over ``before`` (the caller holds the job's lock, or the job is
        new) and tell its transitions. Raises InvalidTransition, OSError, ValueError."""
        changes = transitions_between(before, after, reason, start_reason)
        for transition in changes:
            check_role(self.role, transition.before, transition.after)
        if (lock_fd is not None and before is not None and after.state is State.QUEUED
                and after.attempt <= before.attempt):
            # Back to queued with the same attempt (or a fresh series): the start marker
            # of the attempt put back must not make it count as started later.
            self.spool.locks.clear_marker(lock_fd)
        self.spool.write_status(after)
        for transition in changes:
            self.hear(transition)
        return changes

    def create(self, status: JobStatus, reason: str) -> None:
        """A new job's first status."""
        self.record(None, status, reason)


def append_to_events(spool: SpoolDir) -> Callable[[Transition], None]:
    """The hook of a role with nothing to do but record: append the event."""
    return lambda transition: spool.events.append(transition.event())
