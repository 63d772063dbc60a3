"""``pool.progress()``: a job tells the world how far it is.

It costs about 0.13 µs a call in a hot loop when nothing is due (0.04 µs outside a
worker; benchmarks/core_latency.py): it only stores the numbers, and hands them to the
reporter for a write when the throttle interval has passed. Outside a worker it does
nothing, so a task still runs on its own.
"""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Callable
from typing import Any, Protocol


class Reporter(Protocol):
    next_write: float
    latest: tuple[float, float, str | None] | None

    def write(self) -> None: ...


_reporter: Reporter | None = None
_clock: Callable[[], float] = time.monotonic


def set_reporter(reporter: Reporter | None) -> None:
    global _reporter
    _reporter = reporter


def fraction_of(done: float, total: float) -> float | None:
    """``done`` out of ``total`` as a fraction clamped to 0..1; None when unknowable."""
    if total <= 0 or math.isnan(done):
        return None
    return min(max(done / total, 0.0), 1.0)


def progress(done: float, total: float = 1.0, message: str | None = None) -> None:
    """Report progress of the running job: ``progress(3, 10)`` or ``progress(0.3)``."""
    reporter = _reporter
    if reporter is None:
        return
    reporter.latest = (done, total, message)
    if _clock() >= reporter.next_write:
        reporter.write()


def hook_tqdm() -> bool:
    """Make every tqdm bar in this process report through ``progress()``, so a task with a
    tqdm loop shows its progress without a code change. True when tqdm is there."""
    if importlib.util.find_spec("tqdm") is None:
        return False
    from tqdm import std

    shown = std.tqdm.display
    if getattr(shown, "pool_hooked", False):
        return True

    def display(self: Any, msg: str | None = None, pos: int | None = None) -> Any:
        result = shown(self, msg, pos)
        if self.total:
            progress(self.n, self.total, message=self.desc or None)
        return result

    display.pool_hooked = True  # type: ignore[attr-defined]
    std.tqdm.display = display
    return True
