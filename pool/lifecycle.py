"""The state machine: the only way a job's state changes. Pure, no I/O.

    queued --> running --> done
      |           |-------> failed
      |           |-------> cancelled
      |           '-------> queued     (a retry after a failed attempt, or an
      |                                 interrupted attempt put back on shutdown)
      '---------------------> cancelled
    failed, cancelled --> queued       (only through ``pool retry``)

Each state carries only its own fields: moving to ``queued`` clears the pid, a final
state clears ``next_try_at``, and so on, so a status never says two things at once.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any, Callable, Mapping

from .errors import InvalidTransition
from .model import JobStatus, State, parse_time

TRANSITIONS: dict[State, frozenset[State]] = {
    State.QUEUED: frozenset({State.RUNNING, State.CANCELLED}),
    State.RUNNING: frozenset({State.DONE, State.FAILED, State.CANCELLED, State.QUEUED}),
    State.DONE: frozenset(),
    State.FAILED: frozenset({State.QUEUED}),
    State.CANCELLED: frozenset({State.QUEUED}),
}


def error(kind: str, message: str, traceback: str | None = None) -> dict[str, Any]:
    """An ``error`` record of a status: what went wrong, in one shape everywhere."""
    return {"type": kind, "message": message, "traceback": traceback}


def advance(status: JobStatus, to: State, now: str, **changes: Any) -> JobStatus:
    """Move ``status`` to state ``to`` at time ``now``; raises InvalidTransition."""
    if to not in TRANSITIONS[status.state]:
        raise InvalidTransition(f"job {status.id!r}: cannot go from {status.state.value} to {to.value}")
    fields: dict[str, Any] = {"state": to, "updated_at": now}
    if to is not State.RUNNING:
        fields.update(pid=None, pid_started=None)
    if to.is_final:
        fields.update(finished_at=now, next_try_at=None)
    if to is State.QUEUED:
        fields.update(finished_at=None, next_try_at=None)
    fields.update(changes)
    return dataclasses.replace(status, **fields)


def start(status: JobStatus, pid: int, pid_started: int | None, now: str) -> JobStatus:
    return advance(status, State.RUNNING, now, pid=pid, pid_started=pid_started, started_at=now,
                   error=None, exit_code=None, result=None, message=None, progress=None)


def succeed(status: JobStatus, result: Any, now: str, exit_code: int | None = None) -> JobStatus:
    return advance(status, State.DONE, now, result=result, progress=1.0, exit_code=exit_code)


def retry_delay(status: JobStatus) -> float:
    """Seconds to wait before the attempt after ``status.attempt``."""
    spec = status.spec
    return float(spec.retry_delay * spec.retry_backoff ** (status.attempt - 1))


def fail_attempt(
    status: JobStatus,
    error: Mapping[str, Any],
    now: str,
    exit_code: int | None = None,
) -> JobStatus:
    """End the running attempt as a failure: queued again if attempts remain, else failed."""
    if status.attempt < status.max_attempts:
        next_try = parse_time(now) + timedelta(seconds=retry_delay(status))
        return advance(status, State.QUEUED, now, error=dict(error), exit_code=exit_code,
                       attempt=status.attempt + 1,
                       next_try_at=next_try.isoformat(timespec="microseconds").replace("+00:00", "Z"))
    return advance(status, State.FAILED, now, error=dict(error), exit_code=exit_code)


def cancel(status: JobStatus, now: str, reason: str = "cancelled by request") -> JobStatus:
    return advance(status, State.CANCELLED, now, error=error("Cancelled", reason))


def time_out(status: JobStatus, now: str) -> JobStatus:
    """The attempt ran past its ``timeout`` and was stopped: a failed attempt."""
    message = f"attempt {status.attempt} timed out after {status.spec.timeout or 0:g}s"
    return fail_attempt(status, error("Timeout", message), now)


def settle_attempt(current: JobStatus, attempt: int, change: Callable[[JobStatus], JobStatus], now: str,
                   started: bool = True) -> JobStatus | None:
    """How attempt number ``attempt`` ended, when its worker could not say (it was killed,
    timed out, died): ``change`` applied to ``current``, or None when nothing is to be
    written because the worker wrote the outcome itself (a final state, or the next
    attempt queued). A job still ``queued`` on disk had been handed to its worker all the
    same (``running`` is written only after a few milliseconds), so its attempt counts,
    unless ``started`` is False (cancelled before it was handed over)."""
    if current.state.is_final or current.attempt > attempt:
        return None
    if current.state is State.QUEUED and started:
        current = start(current, 0, None, now)
    return change(current)


def interrupt(status: JobStatus, now: str) -> JobStatus:
    """Put a running attempt back in the queue without counting it (manager shutdown)."""
    return advance(status, State.QUEUED, now, message="interrupted by manager shutdown; will run again")


def retry(status: JobStatus, now: str) -> JobStatus:
    """``pool retry``: a failed or cancelled job starts a fresh series of attempts."""
    return advance(status, State.QUEUED, now, attempt=1, error=None, exit_code=None, result=None,
                   progress=None, message=None, started_at=None)


# An attempt cut short by a dead manager runs again even when it has no retries left,
# but only this many times more, so a job that crashes its manager cannot loop forever.
EXTRA_ATTEMPTS_AFTER_CRASH = 2


def recover_lost(status: JobStatus, now: str, how: str) -> JobStatus:
    """A running attempt whose process is gone without writing an outcome (its manager
    died with it): counted as an attempt, and run again within the bound."""
    lost = error("Interrupted", f"attempt {status.attempt} was lost: {how}")
    if status.attempt < status.max_attempts + EXTRA_ATTEMPTS_AFTER_CRASH:
        return advance(status, State.QUEUED, now, error=lost, attempt=status.attempt + 1)
    return advance(status, State.FAILED, now, error=lost)
