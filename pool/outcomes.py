"""Outcomes: what the executor reports, turned into status changes through the ledger.

    Began     --> dispatch: the attempt's timeout counts from now (and, for an executor
                  whose side writes nothing, ``running`` is written here)
    Progress  --> written into the job's status       (executors whose side writes nothing)
    Output    --> appended to the job's log           (executors whose side writes nothing)
    Recorded  --> the executor's side wrote these changes: the manager's hook hears them
    Ended     --> how the attempt ended, settled in one place for every kind of end

Whether an attempt counts is what its end says: every outcome says whether the attempt's
code began (``running`` is written only after a few milliseconds, so the status cannot
tell). So no path runs an attempt again without counting it, except a graceful stop of
the manager, which is bounded (lifecycle.interrupt):

    how it ended        its code began   the job's status becomes
    Completed           yes              what its code made of it (written by the
                                         executor's side already, or here)
    NotBegun            no               as it is: queued again (watched, if another
                                         process turns out to run it)
    Stopped(cancel)     yes or no        cancelled
    Stopped(timeout)    yes              a failed attempt (Timeout), retried if allowed
    Stopped(shutdown)   yes              queued again, uncounted (at most 3 times)
    WorkerDied          yes              a failed attempt (WorkerDied), retried if allowed
    WorkerFailed        yes              a failed attempt (WorkerError), retried if allowed
    Lost                yes              counted, run again (at most 2 beyond its retries)
    any of the above    no               as it is: queued again

A change that cannot be written now (a full disk, a lock held for a moment) waits here
and is tried again.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

from . import lifecycle
from .clock import iso_now
from .context import Context
from .dispatch import Dispatch, paused_for
from .errors import CorruptStatus, JobBusy, JobNotFound
from .executor import (
    Began,
    Completed,
    Ended,
    ExecutorEvent,
    Lost,
    NotBegun,
    Output,
    Progress,
    Recorded,
    Stopped,
    StopReason,
    WorkerDied,
    WorkerFailed,
)
from .joblog import JobLogs
from .model import JobStatus, State
from .trouble import RETRY

log = logging.getLogger(__name__)

BUSY_RETRY = 0.05  # seconds before trying a job's lock again
START_WAIT = 0.05  # seconds the manager waits for a job's lock to write its start

Change = Callable[[JobStatus], JobStatus]

STOPPED: dict[StopReason, Callable[[JobStatus, str], JobStatus]] = {
    StopReason.CANCEL: lifecycle.cancel,
    StopReason.TIMEOUT: lifecycle.time_out,
    StopReason.SHUTDOWN: lifecycle.interrupt,
}


def change_for(outcome: Stopped | WorkerDied | WorkerFailed | Lost, now: str) -> Change:
    """How an attempt that began and ended this way changes its job's status."""
    if isinstance(outcome, Stopped):
        return lambda status: STOPPED[outcome.reason](status, now)
    if isinstance(outcome, Lost):
        return lambda status: lifecycle.recover_lost(status, now, outcome.how)
    error = lifecycle.error_info("WorkerDied", outcome.how) if isinstance(outcome, WorkerDied) else \
        lifecycle.error_info("WorkerError", outcome.why)
    return lambda status: lifecycle.fail_attempt(status, error, now)


def concluded(outcome: Completed, now: str) -> Change:
    """The verdict of a completed attempt, with its last progress, written here."""
    assert outcome.verdict is not None
    verdict, last = outcome.verdict, outcome.progress

    def change(status: JobStatus) -> JobStatus:
        if last is not None:
            status = dataclasses.replace(status, progress=last.fraction if last.fraction is not None else
                                         status.progress, message=last.message or status.message)
        return lifecycle.conclude(status, verdict, now)

    return change


@dataclass
class Pending:
    """A settlement that could not be written yet."""

    job_id: str
    attempt: int
    change: Change
    began: bool
    due: float


class Outcomes:
    def __init__(self, ctx: Context, dispatch: Dispatch, logs: JobLogs) -> None:
        self.ctx = ctx
        self.dispatch = dispatch
        self.logs = logs
        self.pending: list[Pending] = []

    def take(self, events: list[ExecutorEvent], now: float) -> None:
        for event in events:
            try:
                self._take(event, now)
            except Exception:  # one job's trouble never stops the manager
                log.exception("could not settle %s", event)

    def _take(self, event: ExecutorEvent, now: float) -> None:
        if isinstance(event, Began):
            self.dispatch.attempt_began(event.job_id, event.at)
            if event.started is not None:
                self.write_start(event)
        elif isinstance(event, Progress):
            self.write_progress(event)
        elif isinstance(event, Output):
            self.logs.append(event.job_id, event.data)
        elif isinstance(event, Recorded):
            for transition in event.transitions:
                self.ctx.ledger.hear(transition)
        else:
            self.dispatch.ended(event.job_id)
            self.logs.close(event.job_id)
            self.ended(event, now)

    # ------------------------------------------------------------ while it runs
    def write_start(self, event: Began) -> None:
        """``running``, for an attempt whose executor's side writes nothing."""
        started = event.started
        assert started is not None
        handed = self.dispatch.handed.get(event.job_id)
        if handed is not None:
            self.logs.begin(handed.status)

        def change(status: JobStatus) -> JobStatus | None:
            if status.state is not State.QUEUED or status.attempt != event.attempt:
                return None
            return lifecycle.start(status, started.pid, None, started.started_at, started.host, started.token)

        try:
            self.ctx.ledger.change(event.job_id, change, "started", wait=START_WAIT)
        except (JobBusy, JobNotFound, CorruptStatus, OSError) as exc:
            # Its end still says it began: the attempt counts all the same.
            log.warning("job %s: could not record its start (%s)", event.job_id, exc)

    def write_progress(self, event: Progress) -> None:
        """Best effort, as a worker's own progress writes: the next report follows soon."""
        now = iso_now(self.ctx.clock)

        def change(status: JobStatus) -> JobStatus | None:
            if status.state is not State.RUNNING or status.attempt != event.attempt:
                return None
            return dataclasses.replace(status, updated_at=now,
                                       progress=event.fraction if event.fraction is not None else status.progress,
                                       message=event.message if event.message is not None else status.message)

        try:
            self.ctx.ledger.change(event.job_id, change, wait=0)
        except (JobBusy, JobNotFound, CorruptStatus, OSError) as exc:
            log.debug("job %s: progress not written (%s)", event.job_id, exc)

    # ------------------------------------------------------------ how it ended
    def ended(self, event: Ended, now: float) -> None:
        job_id, attempt, outcome = event.job_id, event.attempt, event.outcome
        if isinstance(outcome, NotBegun):
            self.not_begun(job_id, outcome, now)
        elif isinstance(outcome, Completed):
            if outcome.verdict is not None:
                if outcome.why:
                    log.error("job %s: its worker could not record the outcome (%s); recording it here",
                              job_id, outcome.why)
                self.settle(job_id, attempt, concluded(outcome, iso_now(self.ctx.clock)), True, now)
        elif isinstance(outcome, Stopped) and outcome.reason is StopReason.CANCEL:
            self.settle(job_id, attempt, change_for(outcome, iso_now(self.ctx.clock)), outcome.began, now)
        elif outcome.began:
            self.settle(job_id, attempt, change_for(outcome, iso_now(self.ctx.clock)), True, now)
        else:
            self.requeue(job_id)  # stopped, or what ran it died, before it began: it never ran

    def not_begun(self, job_id: str, outcome: NotBegun, now: float) -> None:
        if outcome.state is State.RUNNING:
            self.recover(job_id, now)  # a process we did not start runs it: watch that one
        elif outcome.state in (State.QUEUED, None):
            if outcome.later:
                self.say_why_it_waits(job_id, outcome.why)
            self.requeue(job_id, RETRY if outcome.later else 0.0)

    def say_why_it_waits(self, job_id: str, why: str) -> None:
        """A job its executor could not start, to be tried again later: its status says
        why (`pool status ID`), once, until it starts (which clears the message)."""
        now = iso_now(self.ctx.clock)

        def change(status: JobStatus) -> JobStatus | None:
            if status.state is not State.QUEUED or status.message == why:
                return None
            return dataclasses.replace(status, message=why, updated_at=now)

        try:
            self.ctx.ledger.change(job_id, change, "waits", wait=START_WAIT)
        except (JobBusy, JobNotFound, CorruptStatus, OSError) as exc:
            log.warning("job %s: could not say why it waits (%s)", job_id, exc)

    def recover(self, job_id: str, now: float) -> None:
        """Hand the executor a job whose attempt another process may run."""
        current = self.ctx.ledger.trusted(job_id)
        if current is None or current.state.is_final:
            return
        if self.dispatch.executor.recover(current, now):
            self.dispatch.recovered(current, paused_for(self.ctx, current))
        elif current.state is State.QUEUED:
            self.dispatch.enqueue(current)

    def requeue(self, job_id: str, delay: float = 0.0) -> None:
        """Queue the job again as its status says, if it says queued."""
        current = self.ctx.ledger.trusted(job_id)
        if current is not None and current.state is State.QUEUED:
            self.dispatch.enqueue(current, delay)

    def settle(self, job_id: str, attempt: int, change: Change, began: bool, now: float) -> None:
        """Write how attempt ``attempt`` ended, unless its outcome is there already."""
        try:
            written = self.ctx.ledger.change(job_id, lambda current: lifecycle.settle_attempt(
                current, attempt, change, iso_now(self.ctx.clock), began), wait=0)
        except JobBusy:
            self.pending.append(Pending(job_id, attempt, change, began, now + BUSY_RETRY))
            return
        except OSError as exc:
            self.pending.append(Pending(job_id, attempt, change, began, now + RETRY))
            self.ctx.trouble.hit(exc, now, len(self.pending))
            return
        except JobNotFound:
            return
        except CorruptStatus as exc:
            self.ctx.ledger.set_aside(job_id, str(exc))
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
            self.settle(p.job_id, p.attempt, p.change, p.began, now)

    def next_deadline(self) -> float | None:
        return min((p.due for p in self.pending), default=None)
