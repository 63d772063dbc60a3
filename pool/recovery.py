"""What a starting manager does with what the last one left behind.

A status still ``running`` is either an orphan that is really still running (same pid
*and* same start time: adopted, watched to its end) or a lost attempt (run again, within
a bound). Stray temp files of dead writers are removed.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Iterator

from . import lifecycle
from .errors import JobBusy, JobNotFound
from .model import JobStatus, State, utc_now
from .procs import is_same_process, open_pidfd, signal_group
from .spool import SpoolDir

log = logging.getLogger(__name__)

STALE_TEMP_SECONDS = 60.0


def remove_stale_temp_files(spool: SpoolDir) -> None:
    cutoff = time.time() - STALE_TEMP_SECONDS
    for folder in (spool.status_dir, spool.requests, spool.root):
        for entry in os.scandir(folder):
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                try:
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                except FileNotFoundError:
                    pass


def recover_statuses(spool: SpoolDir) -> Iterator[tuple[JobStatus, str | None, bool]]:
    """Every job not yet final, as it stands after recovery: (status, the reason when its
    state had to change, whether a live process of a dead manager still runs it)."""
    remove_stale_temp_files(spool)
    for status in spool.iter_statuses():
        if status.state.is_final:
            continue
        if spool.is_leased(status.id):
            yield status, None, True  # its worker outlived its manager: adopt it
        elif status.state is State.RUNNING:
            how = f"its process {status.pid} ended without an outcome"
            try:
                _, after = spool.update_status(status.id, lambda s: lost_if_running(s, how))
            except (JobNotFound, JobBusy):
                continue
            if after is not None:
                log.warning("job %s: %s; attempt %d lost", status.id, how, status.attempt)
                yield after, f"attempt {status.attempt} lost: {how}", False
        else:
            yield status, None, False


def lost_if_running(status: JobStatus, how: str) -> JobStatus | None:
    return lifecycle.recover_lost(status, utc_now(), how) if status.state is State.RUNNING else None


class Adopted:
    """A job still running in a process a previous manager started. It is alive while
    it holds the job's lock; its pid (once its status says running) is for signals."""

    def __init__(self, spool: SpoolDir, status: JobStatus) -> None:
        self.spool = spool
        self.status = status
        self.kill_at: float | None = None
        self.kill_grace: float | None = None
        # Readable when the process ends, so the manager hears of it at once.
        self.pidfd = open_pidfd(status.pid) if status.pid and is_same_process(status.pid, status.pid_started) else None

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def kill(self, grace: float) -> None:
        """SIGTERM now (as soon as its pid is known), SIGKILL after ``grace``."""
        if self.kill_grace is None:
            self.kill_grace = grace
            self._signal()

    def _signal(self) -> None:
        pid = self.status.pid
        if self.kill_at is None and pid and is_same_process(pid, self.status.pid_started):
            self.kill_at = time.monotonic() + (self.kill_grace or 0.0)
            signal_group(pid, signal.SIGTERM)

    def check(self) -> JobStatus | None:
        """The job's outcome once it has one (writing it if the process ended without),
        else None."""
        try:
            current = self.spool.read_status(self.status.id)
        except JobNotFound:
            return self.status
        if current.state.is_final:
            self.spool.append_event(current.id, State.RUNNING, current.state, self.status.attempt, "adopted job ended")
            return current
        if self.spool.is_leased(current.id):
            self.status = current
            if self.kill_grace is not None:
                self._signal()
                if self.kill_at is not None and time.monotonic() >= self.kill_at and current.pid:
                    signal_group(current.pid, signal.SIGKILL)
            return None
        if self.kill_grace is not None:
            change = lambda s: lifecycle.cancel(s, utc_now()) if not s.state.is_final else None  # noqa: E731
        else:
            change = lambda s: lost_if_running(s, "its process ended without an outcome")  # noqa: E731
        before, after = self.spool.update_status(current.id, change)
        if after is None:
            return before
        reason = after.error["message"] if after.error else after.state.value
        self.spool.append_event(current.id, before.state, after.state, self.status.attempt, reason)
        return after
