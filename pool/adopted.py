"""Attempts a previous manager started on this machine, taken over by the local executor.

    recover(job):
      its lock held (a live worker)   --> adopted: watched to its end (a pidfd, and a look
                                          every few seconds), stopped on request; Began
      running, or queued with the start marker of that very attempt, lock free
                                      --> lost: whatever its dead worker left running is
                                          stopped first; then Ended(Lost)
      queued, never begun             --> not ours: the manager queues it

An adopted attempt's process was started by a dead manager, so it is not our child: we
hear of its end through a pidfd. It is alive while it holds the job's lock; its process
group is its worker's pid, checked against the recorded start time (pids are reused) and
our own uid before any signal. When it ends, its status says how: an outcome it wrote
itself is told as it was written (``Recorded``, then ``Completed``); none means it was
stopped (by us: ``Stopped``) or lost (``Lost``).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import CorruptStatus, JobNotFound
from .executor import (
    Began,
    Completed,
    Ended,
    ExecutorEvent,
    Lost,
    NotBegun,
    Recorded,
    Stopped,
    Stopping,
    StopReason,
)
from .ledger import transitions_between
from .locks import Marker
from .model import UNDER_WAY, JobStatus, State, parse_time
from .procs import (
    GroupStop,
    is_running,
    is_same_process,
    leftover_group,
    open_pidfd,
    pause_group,
    process_uid,
    signal_group,
)
from .spool import SpoolDir

log = logging.getLogger(__name__)

LOOK_EVERY = 5.0  # seconds between looks at adopted attempts (a pidfd wakes us sooner)


@dataclass
class Adopted:
    """An attempt running in (or left behind by) a process we did not start."""

    status: JobStatus  # as it was found
    pgid: int | None  # its worker's pid, which leads its process group
    leader_started: int | None
    pidfd: int | None = None
    stop: GroupStop | None = None
    reason: StopReason | None = None  # why we stop it
    lost: bool = False  # its worker is dead: only what it left running is being stopped
    paused: bool = False  # its process group is stopped (`pool pause`, by us or a manager before)

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def settled(spool: SpoolDir, marker: Marker) -> bool:
    """Whether a dead worker's marker has been acted on: it never began its attempt, or
    the job's status says what became of that attempt (another attempt, an end, a put
    back, gone). Until then it is the only sign that the attempt began: a manager killed
    before it wrote the outcome must find it, or the attempt would run again uncounted."""
    if not marker.began:
        return True
    try:
        status = spool.read_status(marker.job_id)
    except (JobNotFound, CorruptStatus):
        return True
    return not (status.state is State.QUEUED and status.attempt == marker.attempt
                and status.updated_at == marker.queued_since)


def forget_settled_workers(spool: SpoolDir, holds: Callable[[str], bool]) -> int:
    """The lock files of dead workers whose markers have been acted on (``settled``) and
    whose job is not still being seen to (``holds``); returns how many are kept."""
    return spool.locks.forget_dead_workers(lambda marker: holds(marker.job_id) or not settled(spool, marker))


class Adoptions:
    def __init__(self, spool: SpoolDir) -> None:
        self.spool = spool
        self.adopted: dict[str, Adopted] = {}
        self.next_look: float | None = None

    def began(self, job: JobStatus) -> bool:
        """Whether the job's current attempt began: it says running, or its start marker
        names this very attempt (queued at that moment)."""
        queued_since = None if job.state in UNDER_WAY else job.updated_at
        return job.state in UNDER_WAY or self.spool.locks.began(job.id, job.attempt, queued_since) is not None

    def recover(self, job: JobStatus, now: float, events: list[ExecutorEvent]) -> bool:
        if job.id in self.adopted:
            return True
        pgid, started = self._leader(job)
        if self.spool.locks.is_leased(job.id):
            adopted = Adopted(job, pgid, started, paused=job.state is State.PAUSED)
            if pgid and is_same_process(pgid, started):
                adopted.pidfd = open_pidfd(pgid)  # readable when it ends: we hear of it at once
                if not adopted.paused and self._ours(pgid):
                    # Its status says it runs: a manager killed between stopping it and saying
                    # so (or between saying it runs again and continuing it) left it stopped.
                    signal_group(pgid, signal.SIGCONT)
            self._watch(job.id, adopted, now)
            log.info("job %s: adopted (still running as pid %s)", job.id, pgid or "not yet known")
            began_at = parse_time(job.started_at).timestamp() if job.started_at else time.time()
            events.append(Began(job.id, job.attempt, now - max(0.0, time.time() - began_at)))
            return True
        if not self.began(job):
            return False
        if leftover_group(pgid, started) and self._ours(pgid):
            log.warning("job %s: stopping what its dead worker %s left running", job.id, pgid)
            self._watch(job.id, Adopted(job, pgid, started, stop=GroupStop.begin(pgid or 0, 0.0, now), lost=True),
                        now)
        else:
            self._claim_output(job)
            events.append(Ended(job.id, job.attempt, Lost("its process ended without an outcome")))
        return True

    def _claim_output(self, job: JobStatus) -> None:
        """What the attempt printed and its dead worker did not name goes into the job's
        log (pool/worker.py, JobOutput): before the job can run again."""
        worker = self.spool.locks.began(job.id, job.attempt)
        if worker is None or is_running(*worker):
            return  # it saw the attempt through, or never began it
        try:
            self.spool.bury_worker(*worker, job.id)
        except OSError as exc:
            log.error("job %s: what it printed could not be kept (%s)", job.id, exc)

    def _watch(self, job_id: str, adopted: Adopted, now: float) -> None:
        self.adopted[job_id] = adopted
        if self.next_look is None:
            self.next_look = now + LOOK_EVERY

    def _leader(self, job: JobStatus) -> tuple[int | None, int | None]:
        """The worker that ran (runs) the attempt: from its status, else its start marker."""
        if job.pid:
            return job.pid, job.pid_started
        return self.spool.locks.began(job.id, job.attempt) or (None, None)

    def _ours(self, pgid: int | None) -> bool:
        """Never signal a process of another user, whatever a status file says."""
        uid = process_uid(pgid) if pgid else None
        return uid is None or uid == os.geteuid()

    def stop(self, job_id: str, reason: StopReason, grace: float, now: float) -> Stopping | None:
        adopted = self.adopted.get(job_id)
        if adopted is None:
            return None
        if adopted.stop is None and adopted.pgid and self._ours(adopted.pgid):
            adopted.reason = reason
            adopted.stop = GroupStop.begin(adopted.pgid, grace, now, f"job {job_id}", paused=adopted.paused)
        elif adopted.stop is not None and now + grace < adopted.stop.kill_at:
            adopted.stop.kill_at = now + grace  # a second, shorter request hurries it
        return Stopping(began=True, kill_at=adopted.stop.kill_at if adopted.stop else None)

    def pause(self, job_id: str) -> bool:
        adopted = self.adopted.get(job_id)
        if adopted is None or adopted.lost or adopted.stop is not None or not adopted.pgid or \
                not self._ours(adopted.pgid) or not is_same_process(adopted.pgid, adopted.leader_started):
            return False
        adopted.paused = adopted.paused or pause_group(adopted.pgid)
        return adopted.paused

    def resume(self, job_id: str) -> bool:
        adopted = self.adopted.get(job_id)
        if adopted is None or not adopted.pgid:
            return False
        if adopted.paused and self._ours(adopted.pgid) and is_same_process(adopted.pgid, adopted.leader_started):
            signal_group(adopted.pgid, signal.SIGCONT)
        adopted.paused = False
        return True

    def check(self, ready: list[Any], now: float, events: list[ExecutorEvent]) -> None:
        """Look at adopted attempts whose pidfd says they ended, whose stop is due, or,
        every LOOK_EVERY seconds, at all of them."""
        every = self.next_look is not None and now >= self.next_look
        if every:
            self.next_look = now + LOOK_EVERY if self.adopted else None
        for job_id, adopted in list(self.adopted.items()):
            due = adopted.pidfd in ready or (adopted.stop is not None and now >= adopted.stop.next_look(now) - 0.001)
            if every or due:
                try:
                    self._check(job_id, adopted, now, events)
                except Exception:  # one job's trouble never stops the manager
                    log.exception("job %s: could not check the adopted attempt", job_id)

    def _check(self, job_id: str, adopted: Adopted, now: float, events: list[ExecutorEvent]) -> None:
        if not adopted.lost and self.spool.locks.is_leased(job_id):
            if adopted.stop is not None:
                adopted.stop.advance(now)
            return
        if adopted.stop is None and leftover_group(adopted.pgid, adopted.leader_started) and self._ours(adopted.pgid):
            adopted.stop = GroupStop.begin(adopted.pgid or 0, 0.0, now)  # what it left running
        if adopted.stop is not None and not adopted.stop.advance(now):
            return  # gone only when its whole group is
        adopted.close()
        del self.adopted[job_id]
        events.extend(self._how_it_ended(adopted))

    def _how_it_ended(self, adopted: Adopted) -> list[ExecutorEvent]:
        ended = self._told(adopted)
        self._claim_output(adopted.status)  # once the marker was read
        return ended

    def _told(self, adopted: Adopted) -> list[ExecutorEvent]:
        seen = adopted.status
        if adopted.lost:
            return [Ended(seen.id, seen.attempt, Lost("its process ended without an outcome"))]
        try:
            current = self.spool.read_status(seen.id)
        except (JobNotFound, CorruptStatus):
            current = None
        if current is not None and (current.state.is_final or current.attempt > seen.attempt or (
                current.state is State.QUEUED and not self.began(current))):
            changes = transitions_between(seen, current, "adopted job ended")
            if not changes:  # it let the job go before it began (not due yet, say)
                return [Ended(seen.id, seen.attempt, NotBegun(State.QUEUED, "its process let it go unbegun"))]
            # It wrote its own outcome: told as it was written.
            return [Recorded(tuple(changes)), Ended(seen.id, seen.attempt, Completed())]
        if adopted.reason is not None:
            return [Ended(seen.id, seen.attempt, Stopped(adopted.reason, True))]
        return [Ended(seen.id, seen.attempt, Lost("its process ended without an outcome"))]

    # ------------------------------------------------------------ the manager's wait
    def waitables(self) -> list[Any]:
        return [a.pidfd for a in self.adopted.values() if a.pidfd is not None]

    def next_deadline(self, now: float) -> float | None:
        deadlines = [a.stop.next_look(now) for a in self.adopted.values() if a.stop is not None]
        if self.next_look is not None:
            deadlines.append(self.next_look)
        return min(deadlines) if deadlines else None

    def close(self) -> None:
        for adopted in self.adopted.values():
            adopted.close()
