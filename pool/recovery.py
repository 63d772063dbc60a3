"""Recovery: what a starting manager does with what the last one left behind, and with
the jobs an inline manager (`pool run`) looks after.

    status not final, at start:
      looked after by an inline manager  --> left to it (looked at on every rescan: taken
                                             back if it is gone)
      otherwise                          --> the executor is asked (``recover``): it
                                             watches an attempt that still runs, reports
                                             the end of one that began and is gone, and
                                             says so of one that never began: queued
    status that cannot be read           --> set aside in rejected/, with why

Where an attempt runs, and so whether it still does, is the executor's to know: locally a
worker's lock on the job, elsewhere whatever that engine keeps.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable

from .adopted import forget_settled_workers
from .context import Context
from .dispatch import Dispatch, paused_for
from .model import JobStatus, State
from .procs import exists
from .safeio import temp_owner_pid
from .spool import SCRATCH_PREFIX
from .waiting import Waiting

log = logging.getLogger(__name__)

STALE_TEMP_SECONDS = 60.0
ORPHAN_OUTPUT_SECONDS = 7 * 86400.0


class Recovery:
    def __init__(self, ctx: Context, dispatch: Dispatch, waiting: Waiting,
                 ended: Callable[[JobStatus], None] | None = None) -> None:
        self.ctx = ctx
        self.dispatch = dispatch
        self.waiting = waiting
        self.ended = ended  # told of each final job found (its hook may be due)
        self.supervised: set[str] = set()  # looked after by an inline manager: watched, not ours

    def recover(self, only: str | None = None) -> None:
        """Pick up where a previous manager stopped, however it stopped (``only``: the
        one job of an inline manager)."""
        if only is None:
            remove_stale_temp_files(self.ctx)
            self.ctx.spool.queued.take_stock(self.ctx.spool.set_aside_record)
        for job_id in [only] if only is not None else self.ctx.spool.status_ids():
            try:
                self.look_at(job_id, supervised_elsewhere=only is None)
            except Exception as exc:  # one job's data never stops the manager
                log.exception("job %s: could not recover it", job_id)
                self.ctx.ledger.set_aside(job_id, f"could not be recovered: {type(exc).__name__}: {exc}")
        if only is None:
            # What dead workers' markers said has been acted on, but for the attempts
            # still being seen to (their ends still to be told).
            forget_settled_workers(self.ctx.spool, self.dispatch.executor.holds)

    def look_at(self, job_id: str, supervised_elsewhere: bool = True) -> None:
        """Decide who looks after a job that is not final (at start, or when the inline
        manager that looked after it is gone)."""
        status = self.ctx.ledger.trusted(job_id)
        if status is not None and status.state.is_final and self.ended is not None:
            self.ended(status)
        if status is None or status.state.is_final or self.dispatch.executor.holds(job_id):
            return
        if supervised_elsewhere and self.ctx.spool.locks.is_supervised(job_id):
            self.supervised.add(job_id)
        elif self.dispatch.executor.recover(status, self.ctx.clock.monotonic()):
            self.dispatch.recovered(status, paused_for(self.ctx, status))
        elif status.state is State.QUEUED:
            self.dispatch.enqueue(status)
        elif status.state is State.WAITING:
            self.waiting.watch(status)

    def check_supervised(self) -> None:
        """On the rescan tick: jobs whose inline manager is gone are ours now."""
        for job_id in list(self.supervised):
            if not self.ctx.spool.locks.is_supervised(job_id):
                self.supervised.discard(job_id)
                self.look_at(job_id)


def remove_stale_temp_files(ctx: Context) -> None:
    """Temp files whose writer is dead (killed between writing and renaming), or old; the
    empty scratch files of dead workers."""
    spool = ctx.spool
    cutoff = time.time() - STALE_TEMP_SECONDS
    for name in spool.log_folder.listdir():
        worker = name[len(SCRATCH_PREFIX):]
        if name.startswith(SCRATCH_PREFIX) and worker.isdigit() and not exists(int(worker)):
            # One that holds output is the job's its worker died running: claimed when the
            # job is recovered (pool/adopted.py); kept a week if that never comes (the job
            # removed first), then gone.
            with contextlib.suppress(OSError):
                st = os.stat(name, dir_fd=spool.log_folder.fd, follow_symlinks=False)
                if st.st_size == 0 or st.st_mtime < time.time() - ORPHAN_OUTPUT_SECONDS:
                    spool.log_folder.unlink(name)
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
