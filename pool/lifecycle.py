"""The state machine: the only way a job's state changes, and who may change it. Pure.

    waiting --> queued    (its time came: the manager; or `pool resume` of a held job)
      '-------------------------------> cancelled
    queued --> waiting    (`pool pause` of a job not started: held, {"paused": true})
    running <--> paused   (`pool pause`/`pool resume`: its processes stopped, continued;
                           a paused attempt may also end cancelled, queued or failed)
    queued --> running --> done
      |           |-------> failed
      |           |-------> cancelled
      |           '-------> queued     (a retry after a failed attempt, or an
      |                                 interrupted attempt put back on shutdown)
      '---------------------> cancelled
    done, failed, cancelled --> queued (only through ``pool retry``: run it again; a job
                                that comes after others waits for them again)

Each state carries only its own fields: moving to ``queued`` clears the pid, a final
state clears ``next_try_at``, and so on, so a status never says two things at once.

Four roles write statuses, each only the changes of its part (``MAY``): the manager
(and, for one job without a manager, the inline manager) every change; the worker
only the attempt it runs; a client with no manager serving only jobs nobody runs.

A job also leaves the spool through the same funnel, as a ``Departure``: a status that
cannot be trusted is set aside (the manager), a job that has ended is removed or pruned
(a client: ``pool remove``, ``pool prune``).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from .errors import InvalidTransition
from .model import UNDER_WAY, JobStatus, State, iso_time, parse_time
from .rules import MAX_SECONDS
from .usage import Usage

TRANSITIONS: dict[State, frozenset[State]] = {
    State.WAITING: frozenset({State.QUEUED, State.CANCELLED}),
    State.QUEUED: frozenset({State.RUNNING, State.CANCELLED, State.WAITING}),
    State.RUNNING: frozenset({State.DONE, State.FAILED, State.CANCELLED, State.QUEUED, State.PAUSED}),
    # Written by the manager only (the worker, stopped, writes nothing meanwhile): its end,
    # when it is killed, interrupted or lost while paused.
    State.PAUSED: frozenset({State.RUNNING, State.CANCELLED, State.QUEUED, State.FAILED}),
    State.DONE: frozenset({State.QUEUED, State.WAITING}),
    State.FAILED: frozenset({State.QUEUED, State.WAITING}),
    State.CANCELLED: frozenset({State.QUEUED, State.WAITING}),
}


class Departure(str, enum.Enum):
    """How a job leaves the spool: not a state, but told and recorded as a change."""

    SET_ASIDE = "set_aside"  # its status could not be trusted: moved to rejected/
    REMOVED = "removed"  # pool remove
    PRUNED = "pruned"  # pool prune

    @property
    def is_final(self) -> bool:
        return True  # nothing follows: whoever tracked the job forgets it


class Role(str, enum.Enum):
    MANAGER = "manager"  # pool serve
    INLINE = "inline manager"  # pool.inline: the manager for one job, with no manager serving
    WORKER = "worker"  # the process running one attempt
    CLIENT = "client"  # pool.Spool and the CLI, for jobs that nothing runs, with no manager


_EVERY = frozenset((a, b) for a, targets in TRANSITIONS.items() for b in targets)
_ATTEMPT = frozenset({(State.QUEUED, State.RUNNING), (State.RUNNING, State.DONE), (State.RUNNING, State.FAILED),
                      (State.RUNNING, State.QUEUED)})
_RETRY = frozenset((final, again) for final in (State.DONE, State.FAILED, State.CANCELLED)
                   for again in (State.QUEUED, State.WAITING))
NEW = None  # the "state before" of a job being created

_SET_ASIDE = frozenset({(NEW, Departure.SET_ASIDE)})  # whatever it said, it could not be read
_FORGET = frozenset((final, how) for final in (State.DONE, State.FAILED, State.CANCELLED)
                    for how in (Departure.REMOVED, Departure.PRUNED))

_NEW = frozenset({(NEW, State.QUEUED), (NEW, State.WAITING)})  # taken in: queued, or waiting for its time
MAY: dict[Role, frozenset[tuple[State | None, State | Departure]]] = {
    Role.MANAGER: _EVERY | _NEW | _SET_ASIDE,
    Role.INLINE: (_EVERY - _RETRY) | _SET_ASIDE,
    Role.WORKER: _ATTEMPT,
    # A client with no manager holds a job (`pool pause`), but only the manager releases one.
    Role.CLIENT: _RETRY | _NEW | _FORGET | {(State.QUEUED, State.CANCELLED), (State.WAITING, State.CANCELLED),
                                            (State.QUEUED, State.WAITING)},
}


def check_role(role: Role, before: State | None, after: State | Departure) -> None:
    """Raises InvalidTransition when ``role`` may not make this change."""
    if before is not None and before is after:
        return  # not a state change: progress, a field of the same state
    if (before, after) not in MAY[role]:
        was = before.value if before is not None else "new"
        raise InvalidTransition(f"the {role.value} may not move a job from {was} to {after.value}")


def error_info(kind: str, message: str, traceback: str | None = None) -> dict[str, Any]:
    """An ``error`` record of a status: what went wrong, in one shape everywhere."""
    return {"type": kind, "message": message, "traceback": traceback}


# ---------------------------------------------------------------- what an attempt's code made of it

@dataclasses.dataclass(frozen=True, slots=True)
class Succeeded:
    """The job's code ran to its end: its result (a task's return value), its exit code
    (a command's)."""

    result: Any = None
    exit_code: int | None = None
    usage: Usage | None = None  # what the attempt used (pool/usage.py), when its runner measured it


@dataclasses.dataclass(frozen=True, slots=True)
class Failed:
    """The job's code failed: what went wrong (``error_info``), its exit code (a command's)."""

    error: Mapping[str, Any]
    exit_code: int | None = None
    usage: Usage | None = None


Verdict = Succeeded | Failed


def conclude(status: JobStatus, verdict: Verdict, now: str) -> JobStatus:
    """End the running attempt as its code said: done, or a failed attempt."""
    if isinstance(verdict, Succeeded):
        ended = succeed(status, verdict.result, now, verdict.exit_code)
    else:
        ended = fail_attempt(status, verdict.error, now, verdict.exit_code)
    return dataclasses.replace(ended, usage=verdict.usage)


# Error kinds pool itself records: their message says it all, without the kind in front.
OWN_KINDS = frozenset({"Cancelled", "Timeout", "Interrupted", "WorkerDied", "WorkerError", "CommandFailed",
                       "CommandNotStarted", "CommandsDisabled", "TaskNotAvailable", "Unrecordable"})


def describe(status: JobStatus) -> str:
    """A status's state in words, for the timeline: ``finished``, ``KeyError: 7``, ..."""
    if status.state is State.DONE:
        return "finished"
    if status.error and status.state is not State.RUNNING:
        kind, message = status.error.get("type"), status.error.get("message")
        return str(message) if kind in OWN_KINDS or not kind else f"{kind}: {message}"
    return str(status.state.value)


def passed_through_running(before: JobStatus, after: JobStatus) -> bool:
    """Whether a status written over a ``queued`` one ran an attempt on the way (a worker
    writes ``running`` only after a few milliseconds, and a short attempt never does):
    only a run leads from queued to done or failed, to a later attempt, to another
    interruption, or to cancelled with a start time (a queued job has none)."""
    if before.state is not State.QUEUED or after.state is State.RUNNING:
        return False
    return (after.state in (State.DONE, State.FAILED) or after.attempt > before.attempt
            or after.interruptions > before.interruptions
            or (after.state is State.CANCELLED and after.started_at is not None))


def advance(status: JobStatus, to: State, now: str, **changes: Any) -> JobStatus:
    """Move ``status`` to state ``to`` at time ``now``; raises InvalidTransition."""
    if to not in TRANSITIONS[status.state]:
        raise InvalidTransition(f"job {status.id!r}: cannot go from {status.state.value} to {to.value}")
    fields: dict[str, Any] = {"state": to, "updated_at": now}
    if to is not State.WAITING:
        fields.update(waits=None)
    else:
        fields.update(finished_at=None, next_try_at=None)
    if to not in UNDER_WAY:
        fields.update(pid=None, pid_started=None)
    if to.is_final:
        fields.update(finished_at=now, next_try_at=None)
    if to is State.QUEUED:
        # Waiting again: nothing of the attempt before says it is running or how far.
        fields.update(finished_at=None, next_try_at=None, started_at=None, progress=None)
    fields.update(changes)
    if fields.get("attempt", status.attempt) != status.attempt:
        fields["interruptions"] = 0  # a new attempt has not been interrupted yet
    return dataclasses.replace(status, **fields)


def start(status: JobStatus, pid: int | None, pid_started: int | None, now: str, host: str | None = None,
          token: str | None = None) -> JobStatus:
    return advance(status, State.RUNNING, now, pid=pid, pid_started=pid_started, started_at=now,
                   error=None, exit_code=None, result=None, message=None, progress=None, usage=None, host=host,
                   token=token)


def succeed(status: JobStatus, result: Any, now: str, exit_code: int | None = None) -> JobStatus:
    return advance(status, State.DONE, now, result=result, progress=1.0, exit_code=exit_code)


def retry_delay(status: JobStatus) -> float:
    """Seconds to wait before the attempt after ``status.attempt``, at most a year."""
    spec = status.spec
    try:
        delay = spec.retry_delay * spec.retry_backoff ** (status.attempt - 1)
    except OverflowError:
        return MAX_SECONDS
    return float(min(delay, MAX_SECONDS))


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
                       attempt=status.attempt + 1, next_try_at=iso_time(next_try))
    return advance(status, State.FAILED, now, error=dict(error), exit_code=exit_code)


def cancel(status: JobStatus, now: str, reason: str = "cancelled by request") -> JobStatus:
    return advance(status, State.CANCELLED, now, error=error_info("Cancelled", reason))


def time_out(status: JobStatus, now: str) -> JobStatus:
    """The attempt ran past its ``timeout`` and was stopped: a failed attempt."""
    message = f"attempt {status.attempt} timed out after {status.spec.timeout or 0:g}s"
    return fail_attempt(status, error_info("Timeout", message), now)


def settle_attempt(current: JobStatus, attempt: int, change: Callable[[JobStatus], JobStatus | None], now: str,
                   started: bool = True) -> JobStatus | None:
    """How attempt number ``attempt`` ended, when its worker could not say (it was killed,
    timed out, died): ``change`` applied to ``current``, or None when nothing is to be
    written because the outcome is already there (a final state, or a later attempt).
    A job still ``queued`` on disk may have started all the same (``running`` is written
    only after a few milliseconds): ``started`` says whether it did, so its attempt
    counts; one that never started is changed from ``queued``."""
    if current.state.is_final or current.attempt > attempt:
        return None
    if current.state is State.QUEUED and started:
        current = start(current, 0, None, now)
    return change(current)


# A graceful stop of the manager puts a running attempt back uncounted, but only this many
# times: a job that is always running when the manager is restarted still ends.
MAX_INTERRUPTIONS = 3


def interrupt(status: JobStatus, now: str) -> JobStatus:
    """Put a running attempt back in the queue without counting it (manager shutdown)."""
    if status.interruptions >= MAX_INTERRUPTIONS:
        return recover_lost(status, now, f"interrupted by {status.interruptions + 1} manager shutdowns")
    return advance(status, State.QUEUED, now, message="interrupted by manager shutdown; will run again",
                   interruptions=status.interruptions + 1)


def retry(status: JobStatus, now: str) -> JobStatus:
    """``pool retry``: a job that has ended (done too) starts a fresh series of attempts;
    one that comes after others waits for them again (its time, long past, is not)."""
    after = {"after": list(status.spec.after)} if status.spec.after else None
    return advance(status, State.WAITING if after else State.QUEUED, now, attempt=1, error=None, exit_code=None,
                   result=None, progress=None, message=None, started_at=None, interruptions=0, waits=after,
                   usage=None)


# An attempt cut short by a dead manager runs again even when it has no retries left,
# but only this many times more, so a job that crashes its manager cannot loop forever.
EXTRA_ATTEMPTS_AFTER_CRASH = 2


def recover_lost(status: JobStatus, now: str, how: str) -> JobStatus:
    """A running attempt whose process is gone without writing an outcome (its manager
    died with it): counted as an attempt, and run again within the bound."""
    lost = error_info("Interrupted", f"attempt {status.attempt} was lost: {how}")
    if status.attempt < status.max_attempts + EXTRA_ATTEMPTS_AFTER_CRASH:
        return advance(status, State.QUEUED, now, error=lost, attempt=status.attempt + 1)
    return advance(status, State.FAILED, now, error=lost)


NOT_STARTED = frozenset({State.WAITING, State.QUEUED})


def cancel_for_dependency(status: JobStatus, now: str, dependency: str, how: str) -> JobStatus:
    """A job that needs ``dependency`` done will never start: it failed, was cancelled, is gone."""
    return cancel(status, now, f"dependency {dependency} {how}")


def blamed_dependency(status: JobStatus) -> str | None:
    """The dependency whose end cancelled this job (``cancel_for_dependency``), if one did."""
    message = status.error.get("message") if status.state is State.CANCELLED and status.error else None
    if not isinstance(message, str) or not message.startswith("dependency "):
        return None
    named = message.split(" ")[1]
    return named if named in status.spec.after else None


def cancel_if_queued(now: str, reason: str = "cancelled by request") -> Callable[[JobStatus], JobStatus | None]:
    """A change that cancels the job if it has not started (waiting or queued; else
    leaves it as it is)."""
    return lambda status: cancel(status, now, reason) if status.state in NOT_STARTED else None


def cancel_if_unstarted(now: str) -> Callable[[JobStatus], JobStatus | None]:
    """A change that cancels the job if no attempt of it has begun (a future's
    ``cancel()``: a job queued again for a retry has begun); else leaves it as it is."""
    return lambda status: cancel(status, now, "cancelled before it started") if (
        status.state in NOT_STARTED and status.started_at is None) else None


def release(now: str) -> Callable[[JobStatus], JobStatus | None]:
    """A change that queues a waiting job whose time has come (else leaves it as it is)."""
    return lambda status: advance(status, State.QUEUED, now) if status.state is State.WAITING else None


def pause(now: str) -> Callable[[JobStatus], JobStatus | None]:
    """A change that holds a job not started (waiting, {"paused": true}: `pool pause`), or
    says a running one is paused (its processes are stopped); else leaves it as it is."""

    def change(status: JobStatus) -> JobStatus | None:
        if status.state is State.RUNNING:
            return advance(status, State.PAUSED, now)
        if status.state in NOT_STARTED and not (status.waits or {}).get("paused"):
            waits = {**(status.waits or {}), "paused": True}
            return advance(status, State.WAITING, now, waits=waits) if status.state is State.QUEUED else \
                dataclasses.replace(status, waits=waits, updated_at=now)
        return None

    return change


def resume(now: str) -> Callable[[JobStatus], JobStatus | None]:
    """A change that undoes ``pause``: a paused job runs on (its processes are continued
    after this is written); a held one waits for whatever else it waits for, or is queued."""

    def change(status: JobStatus) -> JobStatus | None:
        if status.state is State.PAUSED:
            return advance(status, State.RUNNING, now)
        waits = dict(status.waits or {})
        if status.state is not State.WAITING or not waits.pop("paused", False):
            return None
        return dataclasses.replace(status, waits=waits, updated_at=now) if waits else \
            advance(status, State.QUEUED, now)

    return change


def retry_if_final(now: str) -> Callable[[JobStatus], JobStatus | None]:
    """A change that queues a job that has ended again (else leaves it as it is)."""
    return lambda status: retry(status, now) if status.state.is_final else None
