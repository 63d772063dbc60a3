"""Outcomes: what the executor reports, turned into status changes through the ledger.

    Began     --> dispatch: the attempt's timeout counts from now
    Recorded  --> the worker wrote these changes: the manager's hook hears them
    Ended     --> how the attempt ended, settled in one place for every kind of end:
                  Finished (written; or unrecorded: written here), NotStarted (queued
                  again, uncounted), Stopped (cancel, timeout, shutdown), Died, Crashed

Whether an attempt counts is never guessed from the status (``running`` is written only
after a few milliseconds): the start marker the worker wrote in the job's lock file says
whether that attempt began. So no path runs an attempt again without counting it, except
a graceful stop, which is bounded too (lifecycle.interrupt). A change that cannot be
written now (a full disk, a lock still held) waits here and is tried again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from . import lifecycle
from .clock import Clock, iso_now
from .dispatch import Dispatch
from .errors import CorruptStatus, JobBusy, JobNotFound
from .executor import Began, Crashed, Died, Ended, ExecutorEvent, Finished, NotStarted, Recorded, Stopped, StopReason
from .ledger import Ledger
from .model import JobStatus, State
from .spool import SpoolDir

log = logging.getLogger(__name__)

TROUBLE_RETRY = 1.0  # seconds between tries while the spool cannot be written
BUSY_RETRY = 0.05  # seconds before trying a job's lock again


@dataclass
class Pending:
    """A settlement that could not be written yet."""

    job_id: str
    attempt: int
    change: Callable[[JobStatus], JobStatus]
    started: bool
    due: float


class Outcomes:
    def __init__(self, spool: SpoolDir, ledger: Ledger, dispatch: Dispatch, clock: Clock,
                 adopt: Callable[[str], None], trouble: Callable[[OSError], None]) -> None:
        self.spool = spool
        self.ledger = ledger
        self.dispatch = dispatch
        self.clock = clock
        self.adopt = adopt
        self.trouble = trouble
        self.pending: list[Pending] = []

    def take(self, events: list[ExecutorEvent], now: float) -> None:
        for event in events:
            try:
                if isinstance(event, Began):
                    self.dispatch.began(event.job_id, event.at)
                elif isinstance(event, Recorded):
                    for transition in event.transitions:
                        self.ledger.hear(transition)
                else:
                    self.dispatch.ended(event.job_id)
                    self.ended(event, now)
            except Exception:  # one job's trouble never stops the manager
                log.exception("could not settle %s", event)

    def ended(self, event: Ended, now: float) -> None:
        job_id, attempt, outcome = event.job_id, event.attempt, event.outcome
        if isinstance(outcome, Finished):
            if outcome.unrecorded is not None:
                log.error("job %s: its worker could not record the outcome (%s); recording it here",
                          job_id, outcome.why)
                final = outcome.unrecorded
                self.settle(job_id, attempt, lambda current: final, True, now)
        elif isinstance(outcome, NotStarted):
            self.not_started(job_id, attempt, outcome, now)
        elif isinstance(outcome, Stopped) and outcome.reason is StopReason.CANCEL:
            self.settle(job_id, attempt, outcome.reason.outcome(iso_now(self.clock)), self.began(job_id, attempt), now)
        elif not (isinstance(outcome, Crashed) and outcome.started) and not self.began(job_id, attempt):
            self.requeue(job_id)  # stopped, or its worker died, before it began: it never ran
        elif isinstance(outcome, Stopped):
            self.settle(job_id, attempt, outcome.reason.outcome(iso_now(self.clock)), True, now)
        else:
            kind, why = ("WorkerDied", outcome.how) if isinstance(outcome, Died) else ("WorkerError", outcome.why)
            failure = lifecycle.error(kind, why)
            self.settle(job_id, attempt, lambda s: lifecycle.fail_attempt(s, failure, iso_now(self.clock)), True, now)

    def began(self, job_id: str, attempt: int) -> bool:
        """Whether the attempt's code began: its start marker says so."""
        return self.spool.locks.began(job_id, attempt) is not None

    def not_started(self, job_id: str, attempt: int, outcome: NotStarted, now: float) -> None:
        if outcome.state is State.RUNNING:
            self.adopt(job_id)  # a process we did not start runs it: watch that one
        elif outcome.state is None and self.began(job_id, attempt):
            # Its worker was stopped right after it began it (the race is a few µs wide).
            failure = lifecycle.error("WorkerDied", "its worker was stopped as the attempt began")
            self.settle(job_id, attempt, lambda s: lifecycle.fail_attempt(s, failure, iso_now(self.clock)),
                        True, now)
        elif outcome.state in (State.QUEUED, None):
            delay = TROUBLE_RETRY if "cannot record" in outcome.why else 0.0
            self.requeue(job_id, delay)

    def requeue(self, job_id: str, delay: float = 0.0) -> None:
        """Queue the job again as its status says, if it says queued."""
        current = self.spool.read_trusted(job_id)
        if current is not None and current.state is State.QUEUED:
            self.dispatch.enqueue(current, delay)

    def settle(self, job_id: str, attempt: int, change: Callable[[JobStatus], JobStatus], started: bool,
               now: float) -> None:
        """Write how attempt ``attempt`` ended, unless its outcome is there already."""
        try:
            written = self.ledger.change(job_id, lambda current: lifecycle.settle_attempt(
                current, attempt, change, iso_now(self.clock), started), wait=0)
        except JobBusy:
            self.pending.append(Pending(job_id, attempt, change, started, now + BUSY_RETRY))
            return
        except OSError as exc:
            self.pending.append(Pending(job_id, attempt, change, started, now + TROUBLE_RETRY))
            self.trouble(exc)
            return
        except JobNotFound:
            return
        except CorruptStatus as exc:
            self.spool.set_aside(job_id, str(exc))
            return
        if written is None:
            self.requeue(job_id)  # nothing to change: if it waits, it waits in the queue
        elif written.state is State.QUEUED:
            self.dispatch.enqueue(written)

    def retry_pending(self, now: float) -> None:
        """Try the settlements whose time has come."""
        due = [p for p in self.pending if p.due <= now]
        self.pending = [p for p in self.pending if p.due > now]
        for p in due:
            self.settle(p.job_id, p.attempt, p.change, p.started, now)

    def next_deadline(self) -> float | None:
        return min((p.due for p in self.pending), default=None)

