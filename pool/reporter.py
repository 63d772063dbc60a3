"""Reporting a running attempt: its progress, throttled, and where it goes.

``pool.progress()`` and the output parser only *store* the latest value; it is sent when
the interval has passed, by the next call, or, when the job goes quiet (a task blocked
after its last report), by the flusher thread, so the last value always lands. Where it
goes is the reporter's kind:

- ``StatusReporter`` (a local worker) writes the job's status in the spool, under the
  job's lock, which the worker holds all along. ``running`` itself is the first of the
  throttled writes, once the job has run one interval: a job that ends sooner goes from
  ``queued`` to its outcome in one write (``started_at`` is kept all the same, and the
  start marker in its lock file says it began). Each write is a new file renamed over
  the last, and on ext4 a new inode is the dearest part of a job's file work (perf:
  the allocator's scan past recently deleted inodes): a 100 ms job makes two, not three.
  Each write goes through the worker's Ledger, which tells the manager of state changes.
- ``MessageReporter`` (a detached runner, where there is no spool) sends each report as
  a message; the manager writes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from . import lifecycle
from . import messages as msg
from .errors import InvalidTransition
from .joblog import LogCap
from .ledger import Ledger
from .lifecycle import Verdict
from .locks import Lease
from .model import JobStatus, utc_now
from .progress import fraction_of

log = logging.getLogger(__name__)

OUTCOME_RETRY_PAUSES = (0.05, 0.2)  # then the manager is handed the outcome to write


class Reporter:
    """The status of the attempt running in this process, and its throttled reports."""

    def __init__(self, running: JobStatus, interval: float, first_after: float) -> None:
        self.status = running
        self.interval = interval
        self.mutex = threading.Lock()  # the job's thread and the flusher both report
        self.closed = False
        self.next_write = time.monotonic() + first_after
        self.latest: tuple[float, float, str | None] | None = None

    def current(self) -> JobStatus:
        """The status with the latest reported progress folded in."""
        return self._folded(self.latest)

    def _folded(self, latest: tuple[float, float, str | None] | None) -> JobStatus:
        if latest is None:
            return self.status
        done, total, message = latest
        fraction = fraction_of(done, total)
        return replace(self.status, progress=fraction if fraction is not None else self.status.progress,
                       message=message if message is not None else self.status.message)

    def observe(self, fraction: float | None, message: str | None) -> None:
        """Progress read from output (a fraction, not a done/total pair)."""
        self.latest = (fraction if fraction is not None else float("nan"), 1.0, message)

    def pending(self) -> bool:
        """Something is waiting to be sent."""
        return self.latest is not None

    def due_in(self) -> float | None:
        """Seconds until a pending report may be sent; None if nothing is pending."""
        if not self.pending():
            return None
        return max(0.0, self.next_write - time.monotonic())

    def write_if_due(self) -> None:
        if self.pending() and time.monotonic() >= self.next_write:
            self.write()

    def write(self) -> None:
        with self.mutex:
            if self.closed:
                return  # the attempt has ended: nothing may be written for it any more
            self.next_write = time.monotonic() + self.interval
            # The job's thread reports without the mutex (a report must never wait on a
            # write): what it reports while this write runs is kept for the next one.
            folded = self.latest
            status = replace(self._folded(folded), updated_at=utc_now())
            try:
                self.send(status)
            except (OSError, ValueError, InvalidTransition) as exc:
                # Progress is best effort: a full disk must not fail the job's own code.
                log.warning("job %s: could not write progress (%s)", status.id, exc)
                return
            self.status = status
            if self.latest is folded:
                self.latest = None

    def send(self, status: JobStatus) -> None:
        """Send one report of the running attempt (raises OSError, ValueError)."""
        raise NotImplementedError

    def close(self) -> JobStatus:
        """No report may follow: the attempt is over. Returns its last status."""
        with self.mutex:
            self.closed = True
            return self.current()


class StatusReporter(Reporter):
    """A local worker's: writes the status under the job's lock (``lease``), which the
    worker holds for the whole attempt."""

    def __init__(self, ledger: Ledger, written: JobStatus, running: JobStatus, interval: float, lease: Lease,
                 start_reason: str) -> None:
        super().__init__(running, interval, interval)
        self.ledger = ledger
        self.written = written  # what is on disk: `queued` until `running` is written
        self.lease = lease
        self.start_reason = start_reason

    def pending(self) -> bool:
        return self.latest is not None or self.written.state is not self.status.state

    def send(self, status: JobStatus) -> None:
        self.ledger.write_leased(self.lease, self.written, status, start_reason=self.start_reason)
        self.written = status

    def finish(self, verdict: Verdict) -> JobStatus:
        """Write the attempt's outcome; no progress write can follow it (also closed when
        this raises). A full or read-only disk is given a moment; then OSError is raised,
        and the outcome is the manager's to write. Returns the outcome written."""
        last = self.close()
        outcome = lifecycle.conclude(last, verdict, utc_now())
        for pause in (*OUTCOME_RETRY_PAUSES, None):
            try:
                self.ledger.write_leased(self.lease, self.written, outcome, start_reason=self.start_reason)
                return outcome
            except OSError as exc:
                if pause is None:
                    raise
                log.error("job %s: cannot record the outcome (%s); retrying in %gs", outcome.id, exc, pause)
                time.sleep(pause)
        raise AssertionError("unreachable")


class MessageReporter(Reporter):
    """A detached runner's: every report is a message to whoever runs it."""

    def __init__(self, running: JobStatus, interval: float, send_message: Callable[[bytes], None]) -> None:
        super().__init__(running, interval, 0.0)
        self.send_message = send_message

    def send(self, status: JobStatus) -> None:
        self.send_message(msg.encode_reply(msg.Progressed(status.id, status.attempt, status.progress, status.message)))


class Flusher:
    """A worker's one background thread: writes a job's pending progress once it is due,
    even when the job has gone quiet. It sleeps while no job runs.

    It is woken only when it sleeps with nothing to watch: while it waits out a timer, a
    new job is picked up when the timer fires, and a job's end is never announced (the
    reporter is closed by then). A run of tiny jobs thus costs it one wake-up per timer,
    not two per job: every wake-up takes the GIL from the jobs (measured: 14 futex calls a
    job instead of 7)."""

    def __init__(self) -> None:
        self.reporter: Reporter | None = None
        self.cap: LogCap | None = None  # the job's log size limit, checked on each wake-up
        self.publish: Callable[[], None] | None = None  # names the job's log once it printed, on each wake-up
        self.changed = threading.Condition()
        self.idle = False  # asleep with no timer
        threading.Thread(target=self._run, name="pool-flusher", daemon=True).start()

    def watch(self, reporter: Reporter | None, cap: LogCap | None = None,
              publish: Callable[[], None] | None = None) -> None:
        # Under the lock even when nothing is to be woken: the thread reads the three
        # together, and a job's end landing between its check and its read left it
        # watching None, and dead (seen on Python 3.10, which switches threads more often).
        with self.changed:
            self.reporter, self.cap, self.publish = reporter, cap, publish
            if reporter is not None and self.idle:
                self.changed.notify()  # the end of a job is looked at when the timer fires

    def _run(self) -> None:
        while True:
            with self.changed:
                while self.reporter is None:
                    self.idle = True
                    self.changed.wait()
                self.idle = False
                reporter, cap, publish = self.reporter, self.cap, self.publish
                due_in = reporter.due_in()
                self.changed.wait(timeout=due_in if due_in is not None else reporter.interval)
            try:
                if publish is not None:  # first: once running is said, what was printed is under the log's name
                    publish()
                reporter.write_if_due()
                if cap is not None:
                    cap.check()
            except Exception:  # the thread outlives one job's trouble: every later job needs it
                log.exception("job %s: its report could not be written", reporter.status.id)
