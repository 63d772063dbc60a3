"""pool.progress(): a no-op outside a worker, throttled inside one."""

from __future__ import annotations

import importlib
import sys
import threading
import time
from collections.abc import Callable

import pytest
from conftest import wait_until

from pool import lifecycle
from pool.jobfile import parse_job
from pool.model import JobStatus, new_status
from pool.progress import fraction_of, progress, set_reporter
from pool.reporter import Flusher, StatusReporter

progress_module = importlib.import_module("pool.progress")


class FakeReporter:
    def __init__(self) -> None:
        self.next_write = 0.0
        self.latest: tuple[float, float, str | None] | None = None
        self.writes: list[tuple[float, float, str | None]] = []

    def write(self) -> None:
        assert self.latest is not None
        self.writes.append(self.latest)
        self.next_write = progress_module._clock() + 1.0


def test_outside_a_worker_it_does_nothing() -> None:
    set_reporter(None)
    progress(3, 10, message="ignored")  # no error, no effect


@pytest.mark.parametrize("done, total, expected", [
    (3, 10, 0.3), (0.37, 1.0, 0.37), (12, 0, None), (-1, 10, 0.0), (11, 10, 1.0), (float("nan"), 1, None),
])
def test_fraction(done: float, total: float, expected: float | None) -> None:
    assert fraction_of(done, total) == expected


def test_writes_are_throttled_but_the_latest_value_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(progress_module, "_clock", lambda: clock[0])
    reporter = FakeReporter()
    set_reporter(reporter)
    try:
        for i in range(1000):
            progress(i, 1000)
        assert reporter.writes == [(0, 1000, None)]  # the first call writes, the rest wait
        assert reporter.latest == (999, 1000, None)
        clock[0] += 1.0
        progress(1000, 1000, "finished")
        assert reporter.writes[-1] == (1000, 1000, "finished") and len(reporter.writes) == 2
    finally:
        set_reporter(None)


class LedgerReportedDuring:
    """A ledger whose first write lets the job's thread report meanwhile (the reporter's
    flusher writes while the job goes on printing)."""

    def __init__(self, report: Callable[[], None]) -> None:
        self.report = report
        self.recorded: list[JobStatus] = []

    def write_leased(self, lease: int, before: JobStatus, after: JobStatus, **_: object) -> list[object]:
        if not self.recorded:
            self.report()
        self.recorded.append(after)
        return []


def test_a_report_made_while_a_write_runs_is_not_lost() -> None:
    """Found by .ci/hunt: a command's last line ("processed epsilon") came in while the
    flusher wrote the one before, and the write then forgot it: the job ended done with
    the message of the line before."""
    queued = new_status(parse_job({"task": "m:f", "id": "j"}, "t", "t"), "2026-01-01T00:00:00.000000Z")
    running = lifecycle.start(queued, 123, 456, "2026-01-01T00:00:00.000000Z")
    reporter: StatusReporter
    ledger = LedgerReportedDuring(lambda: reporter.observe(1.0, "processed epsilon"))
    reporter = StatusReporter(ledger, queued, running, 0.0, -1, "test")  # type: ignore[arg-type]
    reporter.observe(0.8, "processed delta")
    reporter.write()
    assert ledger.recorded[0].message == "processed delta"
    reporter.finish(lifecycle.Succeeded(None))
    assert (ledger.recorded[-1].message, ledger.recorded[-1].progress) == ("processed epsilon", 1.0)


class QuietReporter:
    """What the flusher asks of a reporter, with nothing ever pending; ``fail`` makes its
    writes raise."""

    def __init__(self, fail: bool = False) -> None:
        self.interval = 0.0
        self.fail = fail
        self.writes = 0
        self.status = new_status(parse_job({"task": "m:f", "id": "quiet"}, "t", "t"), "2026-01-01T00:00:00.000000Z")

    def due_in(self) -> float:
        return 0.0

    def write_if_due(self) -> None:
        self.writes += 1
        if self.fail:
            raise RuntimeError("a report that cannot be made")


def started_flusher() -> tuple[Flusher, threading.Thread]:
    before = set(threading.enumerate())
    flusher = Flusher()
    thread, = [t for t in threading.enumerate() if t not in before and t.name == "pool-flusher"]
    return flusher, thread


def test_the_flusher_outlives_jobs_ending_while_it_looks_at_them() -> None:
    """Seen in CI on Python 3.10: a job's end (watch(None)) landing between the flusher's
    check and its read left it watching None, and its thread died, so no later job of that
    worker was ever written `running`. Thread switches as often as they go make the window
    hit within a second on 3.10 (it took 0.1 s before the fix)."""
    flusher, thread = started_flusher()
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        reporter = QuietReporter()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and thread.is_alive():
            flusher.watch(reporter)  # type: ignore[arg-type]
            flusher.watch(None)
        assert thread.is_alive()
    finally:
        sys.setswitchinterval(before)
        flusher.watch(None)


def test_the_flusher_goes_on_after_a_report_raises() -> None:
    flusher, thread = started_flusher()
    try:
        failing = QuietReporter(fail=True)
        flusher.watch(failing)  # type: ignore[arg-type]
        wait_until(lambda: failing.writes >= 2, what="two failed writes")
        good = QuietReporter()
        flusher.watch(good)  # type: ignore[arg-type]
        wait_until(lambda: good.writes > 0, what="the next job's report")
        assert thread.is_alive()
    finally:
        flusher.watch(None)
