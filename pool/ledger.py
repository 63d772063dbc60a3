"""The one funnel for a job's state changes, and for its leaving the spool: lock,
transition, write, event, hook.

    ledger.change(id, fn)  --flock status/<id>.lock--> read --fn--> lifecycle checks the
                           role --> write status/<id>.json --> Transition(s) --> hear()
    ledger.forget / set_aside --flock--> the job's files go --> Transition(to a Departure)

Every role (manager, inline manager, worker, client) changes a job's state through a
Ledger of its own; only what it may do passes (``lifecycle.MAY``). What happened is told
to ``hear`` as Transitions, from the real state before and after: the manager's hook
appends them to events.jsonl and acts on them (queue a job that became ``queued``, forget
one that became final or left); a worker's sends them to its manager. A write without
the job's lock is possible in two cases only, each its own method: a new job (nobody can
hold it yet: ``create``), and the worker that holds the job's lock for its whole attempt
(``write_leased``).

A status can pass through ``running`` without ``running`` ever being written (a worker
writes it only after a few milliseconds): such a write tells two transitions, the start
(at its ``started_at``) and the outcome.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import CorruptStatus, JobBusy, JobNotFound, LateWrite
from .lifecycle import Departure, Role, check_role, describe, passed_through_running
from .locks import LOCK_TIMEOUT, Lease
from .model import AttachedEnv, JobStatus, State, utc_now
from .spool import SpoolDir
from .usage import Usage, is_usage

ATTEMPT_ENDS = (State.DONE, State.FAILED, State.QUEUED)  # where an attempt's runner leaves its job


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change of one job (or its departure from the spool), as it happened."""

    job_id: str
    before: State | None  # None: the job was new (or its status could not be read)
    after: State | Departure
    attempt: int  # the attempt the change is about (0: not known)
    reason: str
    time: str
    status: JobStatus | None = None  # the status written, when the teller has it
    usage: Usage | None = None  # what the attempt that ended here used: each attempt's is kept in events.jsonl

    def event(self) -> dict[str, Any]:
        event = {"time": self.time, "id": self.job_id, "from": self.before.value if self.before else None,
                 "to": self.after.value, "attempt": self.attempt, "reason": self.reason}
        if self.usage is not None:
            event["usage"] = self.usage.to_dict()
        return event

    def to_dict(self) -> dict[str, Any]:
        doc = self.event()
        if self.status is not None and self.after is State.QUEUED:
            doc["status"] = self.status.to_dict()  # the manager queues it as written
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Transition:
        status = JobStatus.from_dict(doc["status"]) if "status" in doc else None
        after = State(doc["to"]) if doc["to"] in State._value2member_map_ else Departure(doc["to"])
        return cls(job_id=doc["id"], before=State(doc["from"]) if doc["from"] else None, after=after,
                   attempt=doc["attempt"], reason=doc["reason"], time=doc["time"], status=status,
                   usage=Usage.from_dict(doc["usage"]) if is_usage(doc.get("usage")) else None)


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
                                  after.updated_at, after, after.usage if after.state in ATTEMPT_ENDS else None))
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
        with self.spool.locks.status_lock(job_id, timeout=wait):
            return self.change_stopped(job_id, change, reason)

    def change_stopped(self, job_id: str, change: Callable[[JobStatus], JobStatus | None],
                       reason: str | None = None) -> JobStatus | None:
        """``change`` with no lock taken: for a job whose lock is held by an attempt whose
        every process is stopped (SIGSTOP, waited for), the one writer that could race it,
        which writes nothing until it is continued (the lock could not be taken: its holder
        keeps it); and for ``change``, which holds the lock. Raises JobNotFound,
        CorruptStatus, InvalidTransition."""
        before = self.spool.read_status(job_id)
        after = change(before)
        if after is None:
            return None
        self._record(before, after, reason)
        return after

    def write_leased(self, lease: Lease, before: JobStatus, after: JobStatus,
                     start_reason: str = "started") -> list[Transition]:
        """The write of the worker that holds the job's lock (``lease``) for its whole
        attempt: ``before`` is what it last wrote. Raises LateWrite once the lease was let
        go (the attempt is over: nothing may be written for it any more),
        InvalidTransition, OSError, ValueError."""
        if not lease.held:
            raise LateWrite(f"job {after.id!r}: a write for attempt {after.attempt} after it ended, refused")
        return self._record(before, after, None, start_reason)

    def create(self, status: JobStatus, reason: str) -> None:
        """A new job's first status (its id is new: nobody else can hold it)."""
        self.create_many([status], reason)

    def create_many(self, statuses: Sequence[JobStatus], reason: str) -> None:
        """New jobs' first statuses, written together (``Folder.write_group``: under
        --durable, the data of them all put on disk with one call); the values of a job's
        environment are kept apart first (the status names them only). Each job is heard
        of once its status is named: what raises leaves the jobs after it unwritten and
        unheard."""
        files: list[tuple[str, bytes, int]] = []
        heard: dict[int, list[Transition]] = {}  # the index of a status among the files -> its changes
        for given in statuses:
            status, env = given, given.spec.caller_env
            if isinstance(env, Mapping) and not isinstance(env, AttachedEnv):
                files.append(self.spool.env_file(status.id, env))
                status = dataclasses.replace(status, spec=dataclasses.replace(status.spec, caller_env=AttachedEnv(env)))
            changes = transitions_between(None, status, reason)
            for transition in changes:
                check_role(self.role, transition.before, transition.after)
            heard[len(files)] = changes
            files.append(self.spool.status_file(status))

        def named(index: int) -> None:
            for transition in heard.get(index, ()):
                self.hear(transition)

        self.spool.statuses.write_group(files, named)

    def create_queued(self, statuses: Sequence[JobStatus], reason: str) -> None:
        """New queued jobs of one record (pool/queuedbook.py: a batch's jobs whose ids pool
        made), written together in it, each heard of once it is named. Their environments
        must be none: kept apart, they need files of their own (``create_many``)."""
        changes = [transitions_between(None, status, reason) for status in statuses]
        for transition in (t for each in changes for t in each):
            check_role(self.role, transition.before, transition.after)

        def named(_: int) -> None:
            for status, each in zip(statuses, changes, strict=True):
                self.spool.queued.arrived(status.id)
                for transition in each:
                    self.hear(transition)

        self.spool.statuses.write_group([self.spool.queued.file(statuses)], named)

    def _record(self, before: JobStatus | None, after: JobStatus, reason: str | None = None,
                start_reason: str = "started") -> list[Transition]:
        changes = transitions_between(before, after, reason, start_reason)
        for transition in changes:
            check_role(self.role, transition.before, transition.after)
        self.spool.write_status(after)
        for transition in changes:
            self.hear(transition)
        return changes

    # ------------------------------------------------------------ leaving the spool
    def trusted(self, job_id: str) -> JobStatus | None:
        """The job's status, or None when it has none, or one that cannot be trusted
        (which is then set aside, so it is never read again)."""
        try:
            return self.spool.read_status(job_id)
        except JobNotFound:
            return None
        except CorruptStatus as exc:
            self.set_aside(job_id, str(exc))
            return None

    def set_aside(self, job_id: str, why: str, wait: float = 0.0) -> bool:
        """Move a status document that cannot be trusted to rejected/, with why, under
        the job's lock, so the job it stood for ends there and nothing reads it again.
        False when its lock is held (a process still writes it: try again later). A lock
        file that is not one (a FIFO, a link) is no reason to keep the status."""
        check_role(self.role, None, Departure.SET_ASIDE)
        try:
            with self.spool.locks.status_lock(job_id, timeout=wait):
                self.spool.set_aside(job_id, why)
        except JobBusy:
            return False
        except CorruptStatus:
            self.spool.set_aside(job_id, why)
        except JobNotFound:
            return False
        self.hear(Transition(job_id, None, Departure.SET_ASIDE, 0, f"status set aside: {why}", utc_now()))
        return True

    def forget(self, job_id: str, still: Callable[[JobStatus], bool], how: Departure, wait: float = 0.0) -> bool:
        """Delete a job's status, lock and log files (``how``: removed, or pruned) if
        ``still(status)`` holds under its lock; False when it no longer does (or the job
        is held by a process, or gone). Its lines in events.jsonl stay, with one more."""
        try:
            with self.spool.locks.status_lock(job_id, timeout=wait):
                status = self.spool.read_status(job_id)
                if not still(status):
                    return False
                check_role(self.role, status.state, how)
                self.spool.delete_job(job_id)
        except (JobBusy, JobNotFound, CorruptStatus):
            return False
        self.hear(Transition(job_id, status.state, how, status.attempt, how.value, utc_now()))
        return True


def append_to_events(spool: SpoolDir) -> Callable[[Transition], None]:
    """The hook of a role with nothing to do but record: append the event."""
    return lambda transition: spool.events.append(transition.event())
