"""The one way anything in the tests waits: on a condition, with a deadline.

A test waits for the spool to say something (``wait_until``, re-exported by conftest); a
job of the test task modules waits for its *gate*, a file its test creates when the job
is to end (``wait_for_gate``), or, when it is to run until killed, for a signal
(``until_killed``). Nothing waits for time to pass."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

POLL = 0.01
JOB_PATIENCE = 300.0  # a job whose test died gives up then: nothing outlives a failed run for long


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Return the predicate's first truthy value; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL)  # between looks at the condition, never past the deadline


def wait_for_gate(gate: str | Path) -> None:
    """In a job: return once the test has created ``gate``."""
    wait_until(lambda: os.path.exists(gate), JOB_PATIENCE, f"the gate {gate}")


def until_killed() -> NoReturn:
    """In a job: do nothing until a signal ends the process (or one it ignores does not)."""
    while True:
        signal.pause()
