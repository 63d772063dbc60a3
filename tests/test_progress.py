"""pool.progress(): a no-op outside a worker, throttled inside one."""

from __future__ import annotations

import importlib

import pytest

from pool.progress import fraction_of, progress, set_reporter

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
