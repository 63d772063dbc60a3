"""A spool that cannot be written (a full or read-only disk): nothing is lost meanwhile.

The manager says so once, starts nothing new, keeps every job where it is, tries again
every ``RETRY`` seconds, and says when the spool is writable again. On a full disk, the
reserve of space it keeps (pool/reserve.py) is let go to record the outcomes that wait.
"""

from __future__ import annotations

import errno
import logging

from .reserve import Reserve

log = logging.getLogger(__name__)

RETRY = 1.0  # seconds between tries while the spool cannot be written


class Trouble:
    def __init__(self, reserve: Reserve | None) -> None:
        self.reserve = reserve
        self.error: OSError | None = None
        self.retry_at: float | None = None  # monotonic: when to try what failed again

    @property
    def active(self) -> bool:
        """The spool could not be written lately: start nothing new."""
        return self.error is not None

    def hit(self, exc: OSError, now: float, waiting_outcomes: int = 0) -> None:
        """A write failed with ``exc``; ``waiting_outcomes`` outcomes wait to be written."""
        if self.error is None:
            log.error("cannot write to the spool (%s); nothing is lost, retrying every %gs until it can", exc, RETRY)
        self.error = exc
        self.retry_at = now + RETRY
        if exc.errno in (errno.ENOSPC, errno.EDQUOT) and waiting_outcomes and self.reserve and self.reserve.release():
            log.warning("let the spool's reserve of disk space go, to record %d outcome(s)", waiting_outcomes)
            self.retry_at = now  # try again at once

    def due(self, now: float) -> bool:
        """Whether what failed may be tried again now."""
        if self.retry_at is not None and now < self.retry_at:
            return False
        self.retry_at = None
        return True

    def over(self) -> None:
        """Everything that had failed was written: the spool is writable again."""
        if self.error is not None and self.retry_at is None:
            log.info("the spool is writable again")
            self.error = None
            if self.reserve is not None:
                self.reserve.keep()
