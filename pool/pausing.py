"""`pool pause` and `pool resume` of one job, as the manager carries them out.

    pause, running  --> executor.pause: every process of the attempt stopped (SIGSTOP),
                        waited for --> ``paused`` written (no lock: its holder is stopped)
                        --> its timeout clock stands still; status/<id>.paused counts
    pause, not started --> waiting, {"paused": true}: out of the queue, held
    resume, paused  --> ``running`` written, *then* the processes continued (SIGCONT):
                        nothing of the attempt writes before its status says it runs
    resume, held    --> waiting for whatever else it waits for, or queued

A paused attempt is killed as a running one is (continued after its SIGTERM, so that it
can handle it), interrupted by a manager's stop the same way, and, left paused by a
manager that stopped or died, taken over still paused by the next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from . import lifecycle
from .clock import iso_now
from .context import Context
from .dispatch import Dispatch
from .errors import CorruptStatus, JobBusy, JobNotFound
from .executor import Executor
from .lifecycle import NOT_STARTED
from .model import JobStatus, State
from .pauses import Pauses
from .waiting import Waiting

log = logging.getLogger(__name__)

NOT_YET = 0.02  # seconds: an attempt whose worker has not yet written `running` is asked again


class Pausing:
    def __init__(self, ctx: Context, dispatch: Dispatch, executor: Executor, waiting: Waiting) -> None:
        self.ctx = ctx
        self.dispatch = dispatch
        self.executor = executor
        self.waiting = waiting

    def pause(self, status: JobStatus, now: float) -> float | None:
        """Pause the job; None when that is done (or nothing is to be done), else when to
        try again (monotonic)."""
        job_id = status.id
        if status.state in NOT_STARTED:
            try:
                held = self.ctx.ledger.change(job_id, lifecycle.pause(iso_now(self.ctx.clock)), "paused by request",
                                              wait=0)
            except JobBusy:  # a worker is beginning it this very moment: it is paused running
                return now + NOT_YET
            if held is not None:
                self.dispatch.forget(job_id)  # one sent ahead skips it: its status no longer says queued
                log.info("job %s: held (pool pause): it starts once resumed", job_id)
            return None
        if status.state is not State.RUNNING:
            return None
        if not self.executor.pause(job_id):
            if self.executor.holds(job_id):
                log.warning("job %s: its attempt cannot be paused here (engine %s)", job_id, self.ctx.config.engine)
            return None
        try:  # every process of it is stopped: what its status says now stays so
            paused = self.ctx.ledger.change_stopped(job_id, lifecycle.pause(iso_now(self.ctx.clock)),
                                                    "paused by request")
        except (JobNotFound, CorruptStatus):
            paused = None
        if paused is None or paused.state is not State.PAUSED:
            self.executor.resume(job_id)  # it ended, or had not written `running` yet
            return now + NOT_YET
        self._count(paused, lambda p: p.paused(self.ctx.clock.time()))
        self.dispatch.paused(job_id, now)
        log.info("job %s: paused (SIGSTOP to its process group)", job_id)
        return None

    def resume(self, status: JobStatus, now: float) -> float | None:
        job_id = status.id
        if status.state is State.PAUSED:
            resumed = self.ctx.ledger.change_stopped(job_id, lifecycle.resume(iso_now(self.ctx.clock)),
                                                     "resumed by request")
            if resumed is not None:
                self._count(resumed, lambda p: p.resumed(self.ctx.clock.time()))
            self.executor.resume(job_id)
            self.dispatch.resumed(job_id, now)
            log.info("job %s: resumed (SIGCONT to its process group)", job_id)
            return None
        if status.state is State.WAITING and (status.waits or {}).get("paused"):
            try:
                released = self.ctx.ledger.change(job_id, lifecycle.resume(iso_now(self.ctx.clock)),
                                                  "resumed by request", wait=0)
            except JobBusy:
                return now + NOT_YET
            if released is not None and released.state is State.WAITING:
                self.waiting.watch(released)  # for what else it waits for (not a change of state: unheard)
        return None

    def _count(self, status: JobStatus, change: Callable[[Pauses], Pauses]) -> None:
        """Keep how long the attempt has been paused (its status cannot: see pool/pauses.py)."""
        pauses = self.ctx.spool.read_pauses(status.id, status.attempt) or Pauses(status.attempt)
        self.ctx.spool.write_pauses(status.id, change(pauses))
