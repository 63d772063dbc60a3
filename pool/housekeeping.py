"""Keeping a spool tidy: forgetting jobs (`pool remove`, `pool prune`), trimming the
central log and rejected/. A job leaves through the ledger, under its lock, with an
event (``removed``, ``pruned``); one that is not final is never touched.
"""

from __future__ import annotations

import contextlib
import time
from datetime import datetime, timedelta, timezone

from .errors import JobBusy
from .finalindex import WORTH_COMPACTING
from .finding import POLL_INTERVAL
from .lifecycle import Departure
from .model import UNDER_WAY, State, iso_time, parse_time
from .requesting import REQUEST_TIMEOUT, Requesting
from .requests import RequestKind


class Housekeeping(Requesting):
    def remove(self, job_id: str, timeout: float = REQUEST_TIMEOUT) -> None:
        """Forget a job: its status, lock and log files are deleted (its lines in
        events.jsonl stay, as history). A queued job is cancelled first, so nothing starts
        it meanwhile. Raises JobBusy for a running job (cancel it first), JobNotFound."""
        status = self.status(job_id)
        if status.state in UNDER_WAY:
            raise JobBusy(f"job {job_id!r} is {status.state.value}; cancel it first")
        if not status.state.is_final:
            self.cancel(job_id)
            self.wait([job_id], timeout)
        deadline = time.monotonic() + timeout
        while not self._ledger().forget(job_id, lambda s: s.state.is_final, Departure.REMOVED):
            if not self.dir.has_status(job_id):
                return  # removed by someone else meanwhile
            if not self.dir.read_status(job_id).state.is_final:
                raise JobBusy(f"job {job_id!r} was queued again meanwhile (pool retry); not removed")
            if time.monotonic() >= deadline:
                raise JobBusy(f"job {job_id!r} is still held by its worker after {timeout:g}s; not removed")
            time.sleep(POLL_INTERVAL)

    def prune(self, older_than: float, states: set[State] | None = None, dry_run: bool = False) -> list[str]:
        """Remove the files of jobs that ended more than ``older_than`` seconds ago (in one
        of ``states``, default every final state). A job that is not final is never
        touched; each is checked again under its lock before it goes. Returns the ids."""
        wanted = states or {State.DONE, State.FAILED, State.CANCELLED}
        cutoff = time.time() - older_than
        removed = []
        ledger = self._ledger()
        for status in self.dir.iter_statuses():
            if status.state not in wanted or not status.finished_at:
                continue
            if parse_time(status.finished_at).timestamp() > cutoff:
                continue
            if dry_run or ledger.forget(status.id, lambda s: s.state in wanted and s.state.is_final, Departure.PRUNED):
                removed.append(status.id)
        if not dry_run and len(removed) >= WORTH_COMPACTING:
            # Their lines in status/index.final stand for nothing now, and every `pool
            # status` would parse them until the manager next compacts: it is asked to now
            # (a manager that starts later compacts at its start). Only a saving: a request
            # that cannot be filed (a full disk) fails no prune.
            with contextlib.suppress(OSError):
                self.dir.box.file(RequestKind.COMPACT, "index")
        return sorted(removed)

    def prune_events(self, older_than: float, dry_run: bool = False) -> int:
        """Drop the lines of events.jsonl (and the log before it) written more than
        ``older_than`` seconds ago, but never those of a job that has not ended (its
        timeline stays whole); returns how many."""
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=older_than)
        ongoing = {s.id for s in self.statuses() if not s.state.is_final}
        return self.dir.events.trim(self.dir.owners, iso_time(cutoff), ongoing, dry_run)

    def prune_rejected(self, older_than: float, dry_run: bool = False) -> list[str]:
        """Remove refused files (and their reasons) from rejected/ that were refused more
        than ``older_than`` seconds ago. Returns their names."""
        return self.dir.drop.prune_rejected(time.time() - older_than, dry_run)
