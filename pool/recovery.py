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
from .errors import JobNotFound
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


def recover_statuses(spool: SpoolDir) -> Iterator[tuple[JobStatus, str | None]]:
    """Every job not yet final, as it stands after recovery, with the reason when its
    state had to change."""
    remove_stale_temp_files(spool)
    for status in spool.iter_statuses():
        if status.state is State.QUEUED:
            yield status, None
        elif status.state is State.RUNNING:
            if is_same_process(status.pid, status.pid_started):
                yield status, None
                continue
            how = f"its process {status.pid} is gone"
            try:
                _, after = spool.update_status(status.id, lambda s: lost_if_running(s, how))
            except JobNotFound:
                continue
            if after is not None:
                log.warning("job %s: %s; attempt %d lost", status.id, how, status.attempt)
                yield after, f"attempt {status.attempt} lost: {how}"


def lost_if_running(status: JobStatus, how: str) -> JobStatus | None:
    return lifecycle.recover_lost(status, utc_now(), how) if status.state is State.RUNNING else None


class Adopted:
    """A job still running in a process a previous manager started."""

    def __init__(self, spool: SpoolDir, status: JobStatus) -> None:
        self.spool = spool
        self.status = status
        self.kill_at: float | None = None
        self.cancelling = False
        # Readable when the process ends, so the manager hears of it at once.
        self.pidfd = open_pidfd(status.pid) if status.pid and self.alive() else None

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def alive(self) -> bool:
        return is_same_process(self.status.pid, self.status.pid_started)

    def kill(self, grace: float) -> None:
        if self.cancelling or not self.alive():
            return
        assert self.status.pid is not None
        self.cancelling = True
        self.kill_at = time.monotonic() + grace
        signal_group(self.status.pid, signal.SIGTERM)

    def check(self) -> JobStatus | None:
        """The job's outcome once it has one (writing it if the process died without),
        else None."""
        try:
            current = self.spool.read_status(self.status.id)
        except JobNotFound:
            return self.status
        if current.state is not State.RUNNING:
            self.spool.append_event(current.id, State.RUNNING, current.state, self.status.attempt, "adopted job ended")
            return current
        if self.alive():
            if self.kill_at is not None and time.monotonic() >= self.kill_at and self.status.pid:
                self.kill_at = None
                signal_group(self.status.pid, signal.SIGKILL)
            return None
        if self.cancelling:
            change = lambda s: lifecycle.cancel(s, utc_now()) if s.state is State.RUNNING else None  # noqa: E731
        else:
            change = lambda s: lost_if_running(s, "its process ended without an outcome")  # noqa: E731
        _, after = self.spool.update_status(current.id, change)
        if after is None:
            return self.spool.read_status(current.id)
        reason = after.error["message"] if after.error else after.state.value
        self.spool.append_event(current.id, State.RUNNING, after.state, self.status.attempt, reason)
        return after
