"""Time, injected: the manager reads both clocks through one object, so a test can step
its loop by hand with time standing still or jumping ahead (as huey's tests step their
consumer with ``now`` passed in)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Protocol

from .model import iso_time


class Clock(Protocol):
    def monotonic(self) -> float:
        """For deadlines: never jumps."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch: for what is written down."""


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


def iso_now(clock: Clock) -> str:
    return iso_time(datetime.fromtimestamp(clock.time(), timezone.utc))
