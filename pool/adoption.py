"""What a starting manager does with what the last one left behind, and the jobs it
watches without having started them.

    status not final, at start:
      held by an inline supervisor   --> left to it (watched: taken back if it dies)
      its lock held (alive)          --> adopted: watched to its end, its timeout and
                                         `pool kill` enforced on its process group
      running, or queued with the start marker of its attempt, lock free
                                     --> a lost attempt: counted, queued again (after
                                         anything its dead worker left running is stopped)
      queued                         --> queued
    status that cannot be read       --> set aside in rejected/, with why

An adopted job's process was started by a dead manager, so it is not our child: we hear
of its end through a pidfd, and look at it on every rescan tick. It is alive while it
holds the job's lock (``Liveness``); its process group is its worker's pid, checked
against the recorded start time (pids are reused) and our own uid before any signal.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import lifecycle
from .clock import Clock, iso_now
from .errors import CorruptStatus, JobBusy, JobNotFound
from .executor import Liveness, StopReason
from .ledger import Ledger, Transition
from .model import JobStatus, State, parse_time
from .procs import GroupStop, exists, is_same_process, leftover_group, open_pidfd, process_uid
from .safeio import temp_owner_pid
from .spool import SpoolDir

log = logging.getLogger(__name__)

STALE_TEMP_SECONDS = 60.0


@dataclass
class Adopted:
    """A job running in (or left behind by) a process we did not start."""

    status: JobStatus
    pgid: int | None  # its worker's pid, which leads its process group
    leader_started: int | None
    pidfd: int | None = None
    timeout_at: float | None = None  # monotonic
    stop: GroupStop | None = None
    reason: StopReason | None = None  # why we stop it; None: leftovers of an attempt that ended

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


class Adoption:
    def __init__(self, spool: SpoolDir, ledger: Ledger, liveness: Liveness, clock: Clock, kill_grace: float,
                 enqueue: Callable[[JobStatus], None]) -> None:
        self.spool = spool
        self.ledger = ledger
        self.liveness = liveness
        self.clock = clock
        self.kill_grace = kill_grace
        self.enqueue = enqueue
        self.adopted: dict[str, Adopted] = {}
        self.supervised: set[str] = set()  # run by an inline supervisor: watched, not ours

    # ------------------------------------------------------------ at start
    def recover(self) -> None:
        """Pick up where a previous manager stopped, however it stopped."""
        remove_stale_temp_files(self.spool)
        for job_id in self.spool.status_ids():
            try:
                self.look_at(job_id)
            except Exception as exc:  # one job's data never stops the manager
                log.exception("job %s: could not recover it", job_id)
                self.spool.set_aside(job_id, f"could not be recovered: {type(exc).__name__}: {exc}")

    def look_at(self, job_id: str) -> None:
        """Decide who looks after a job that is not final (recovery, or its supervisor left)."""
        status = self.spool.read_trusted(job_id)
        if status is None or status.state.is_final or job_id in self.adopted:
            return
        if self.spool.locks.is_supervised(job_id):
            self.supervised.add(job_id)
        elif self.liveness.alive(job_id):
            self.adopt(job_id, status)
        elif status.state is State.RUNNING or self._began(status):
            self.lost(status)
        else:
            self.enqueue(status)

    def _began(self, status: JobStatus) -> bool:
        return self.spool.locks.began(status.id, status.attempt) is not None

    def lost(self, status: JobStatus) -> None:
        """An attempt whose process is gone without an outcome: whatever its worker left
        running is stopped first; then it counts, and runs again within the bound."""
        pgid, started = self._leader(status)
        if leftover_group(pgid, started) and self._ours(pgid):
            log.warning("job %s: stopping what its dead worker %s left running", status.id, pgid)
            self.adopted[status.id] = Adopted(status, pgid, started, stop=GroupStop.begin(
                pgid or 0, 0.0, self.clock.monotonic()))
            return
        self.settle(status, None)

    # ------------------------------------------------------------ adopted jobs
    def adopt(self, job_id: str, status: JobStatus | None = None) -> None:
        """Watch a job that runs in a process we did not start (a dead manager's worker)."""
        if job_id in self.adopted:
            return
        try:
            status = status or self.spool.read_status(job_id)
        except (JobNotFound, CorruptStatus):
            return
        if status.state.is_final:
            return
        pgid, started = self._leader(status)
        adopted = Adopted(status, pgid, started)
        if pgid and is_same_process(pgid, started):
            adopted.pidfd = open_pidfd(pgid)  # readable when it ends: we hear of it at once
        if status.spec.timeout:
            began = parse_time(status.started_at).timestamp() if status.started_at else self.clock.time()
            adopted.timeout_at = self.clock.monotonic() + status.spec.timeout - (self.clock.time() - began)
        self.adopted[job_id] = adopted
        log.info("job %s: adopted (still running as pid %s)", job_id, pgid or "not yet known")

    def _leader(self, status: JobStatus) -> tuple[int | None, int | None]:
        """The worker that ran (runs) the attempt: from its status, else its start marker."""
        if status.pid:
            return status.pid, status.pid_started
        return self.spool.locks.began(status.id, status.attempt) or (None, None)

    def _ours(self, pgid: int | None) -> bool:
        """Never signal a process of another user, whatever a status file says."""
        uid = process_uid(pgid) if pgid else None
        return uid is None or uid == os.geteuid()

    def stop(self, job_id: str, grace: float, now: float, reason: StopReason = StopReason.CANCEL) -> bool:
        """Stop an adopted job's process group; False when it is not adopted."""
        adopted = self.adopted.get(job_id)
        if adopted is None:
            return False
        if adopted.stop is None and adopted.pgid and self._ours(adopted.pgid):
            adopted.reason = reason
            adopted.stop = GroupStop.begin(adopted.pgid, grace, now, f"job {job_id}")
        return True

    def check(self, ready: list[Any], now: float, every: bool = False) -> None:
        """Look at adopted jobs whose pidfd says they ended, whose deadline passed, or
        (``every``: the rescan tick) all of them; and at supervised jobs on the tick."""
        for job_id, adopted in list(self.adopted.items()):
            due = adopted.pidfd in ready or (adopted.timeout_at is not None and now >= adopted.timeout_at) or (
                adopted.stop is not None and now >= adopted.stop.next_look(now) - 0.001)
            if every or due:
                try:
                    self._check(job_id, adopted, now)
                except Exception:
                    log.exception("job %s: could not check the adopted job", job_id)
        if every:
            for job_id in list(self.supervised):
                if not self.spool.locks.is_supervised(job_id):
                    self.supervised.discard(job_id)
                    self.look_at(job_id)

    def _check(self, job_id: str, adopted: Adopted, now: float) -> None:
        alive = self.liveness.alive(job_id)
        if alive:
            if adopted.timeout_at is not None and now >= adopted.timeout_at and adopted.stop is None:
                log.warning("job %s: timed out after %gs", job_id, adopted.status.spec.timeout or 0)
                self.stop(job_id, self.kill_grace, now, StopReason.TIMEOUT)
            if adopted.stop is not None:
                adopted.stop.advance(now)
            return
        if adopted.stop is None and leftover_group(adopted.pgid, adopted.leader_started) and self._ours(adopted.pgid):
            adopted.stop = GroupStop.begin(adopted.pgid or 0, 0.0, now)  # what it left running
        if adopted.stop is not None and not adopted.stop.advance(now):
            return  # gone only when its whole group is
        adopted.close()
        del self.adopted[job_id]
        try:
            current = self.spool.read_status(job_id)
        except (JobNotFound, CorruptStatus):
            return
        self.settle(current, adopted.reason, adopted.status)

    def settle(self, current: JobStatus, reason: StopReason | None, seen: JobStatus | None = None) -> None:
        """Write how an attempt we did not start ended: its own outcome if it wrote one."""
        if current.state.is_final or (current.state is State.QUEUED and not self._began(current)):
            if seen is not None and current.state is not seen.state:
                self.ledger.hear(Transition(current.id, State.RUNNING, current.state, seen.attempt,
                                            "adopted job ended", current.updated_at, current))
            elif current.state is State.QUEUED:
                self.enqueue(current)
            return
        now = iso_now(self.clock)
        how = "its process ended without an outcome"
        change: Callable[[JobStatus], JobStatus | None] = (
            reason.outcome(now) if reason is not None else lambda s: lifecycle.recover_lost(s, now, how))
        try:
            self.ledger.change(current.id, lambda s: lifecycle.settle_attempt(s, s.attempt, change, now), wait=0.5)
        except (JobNotFound, CorruptStatus, JobBusy) as exc:
            log.error("job %s: could not record how its attempt ended (%s)", current.id, exc)

    # ------------------------------------------------------------ the manager's wait
    def waitables(self) -> list[Any]:
        return [a.pidfd for a in self.adopted.values() if a.pidfd is not None]

    def next_deadline(self, now: float) -> float | None:
        deadlines = [a.timeout_at for a in self.adopted.values() if a.timeout_at is not None and a.stop is None]
        deadlines += [a.stop.next_look(now) for a in self.adopted.values() if a.stop is not None]
        return min(deadlines) if deadlines else None

    def close(self) -> None:
        for adopted in self.adopted.values():
            adopted.close()


def remove_stale_temp_files(spool: SpoolDir) -> None:
    """Temp files whose writer is dead (killed between writing and renaming), or old."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    for folder in (spool.statuses, spool.box.folder, spool.top, spool.drop.rejected):
        for name in folder.listdir():
            pid = temp_owner_pid(name)
            if pid is None:
                continue
            try:
                st = os.stat(name, dir_fd=folder.fd, follow_symlinks=False)
                if pid != os.getpid() and (not exists(pid) or st.st_mtime < cutoff):
                    os.unlink(name, dir_fd=folder.fd)
            except FileNotFoundError:
                pass

