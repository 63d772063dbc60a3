"""The transition table and the outcome of attempts: pure."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from pool import lifecycle
from pool.errors import InvalidTransition
from pool.ledger import transitions_between
from pool.jobfile import parse_job
from pool.model import JobStatus, State, new_status, parse_time, utc_now
from pool.rules import MAX_SECONDS

T0 = "2026-01-01T00:00:00.000000Z"
T1 = "2026-01-01T00:00:10.000000Z"


def queued(**job: object) -> JobStatus:
    return new_status(parse_job({"task": "m:f", "id": "j", **job}, "t", "t"), T0)


def running(**job: object) -> JobStatus:
    return lifecycle.start(queued(**job), 123, 456, T0)


def in_state(state: State) -> JobStatus:
    """A status that reached ``state`` the ordinary way."""
    error = {"type": "E", "message": "m", "traceback": None}
    return {
        State.WAITING: lambda: new_status(parse_job({"task": "m:f", "id": "j", "delay": 3600}, "t", "t"), utc_now()),
        State.QUEUED: queued,
        State.RUNNING: running,
        State.PAUSED: lambda: lifecycle.pause(T1)(running()),
        State.DONE: lambda: lifecycle.succeed(running(), 1, T1),
        State.FAILED: lambda: lifecycle.fail_attempt(running(), error, T1),
        State.CANCELLED: lambda: lifecycle.cancel(queued(), T1),
    }[state]()


ALLOWED = {(a, b) for a, targets in lifecycle.TRANSITIONS.items() for b in targets}


@pytest.mark.parametrize("before", list(State))
@pytest.mark.parametrize("after", list(State))
def test_only_the_table_allows_a_change(before: State, after: State) -> None:
    status = in_state(before)
    assert status.state is before
    if (before, after) in ALLOWED:
        assert lifecycle.advance(status, after, T1).state is after
    else:
        with pytest.raises(InvalidTransition, match=f"cannot go from {before.value} to {after.value}"):
            lifecycle.advance(status, after, T1)


def test_pause_and_resume_go_both_ways_and_keep_what_they_must() -> None:
    paused = lifecycle.pause(T1)(running())
    assert paused is not None and (paused.state, paused.pid) == (State.PAUSED, 123)  # its pid: the group to continue
    resumed = lifecycle.resume(T1)(paused)
    assert resumed is not None and (resumed.state, resumed.pid, resumed.started_at) == (State.RUNNING, 123, T0)
    held = lifecycle.pause(T1)(queued())
    assert held is not None and (held.state, held.waits) == (State.WAITING, {"paused": True})
    assert lifecycle.pause(T1)(held) is None  # held already
    waiting = in_state(State.WAITING)
    held_too = lifecycle.pause(T1)(waiting)
    assert held_too is not None and held_too.state is State.WAITING and set(held_too.waits or {}) == {"until", "paused"}
    unheld = lifecycle.resume(T1)(held_too)
    assert unheld is not None and unheld.state is State.WAITING and set(unheld.waits or {}) == {"until"}
    released = lifecycle.resume(T1)(held)
    assert released is not None and released.state is State.QUEUED and released.waits is None
    assert lifecycle.resume(T1)(running()) is None and lifecycle.pause(T1)(lifecycle.cancel(queued(), T1)) is None


def test_a_job_that_has_ended_only_goes_back_by_retry() -> None:
    for final in (State.DONE, State.FAILED, State.CANCELLED):  # waiting: one that comes after others
        assert lifecycle.TRANSITIONS[final] == {State.QUEUED, State.WAITING}


def test_start_records_the_process() -> None:
    status = running()
    assert (status.state, status.pid, status.pid_started, status.started_at) == (State.RUNNING, 123, 456, T0)


def test_success_sets_result_and_full_progress_and_clears_the_pid() -> None:
    status = lifecycle.succeed(running(), {"x": 1}, T1)
    assert (status.state, status.result, status.progress, status.pid, status.finished_at) == (
        State.DONE, {"x": 1}, 1.0, None, T1)


def test_a_failure_with_retries_left_queues_the_next_attempt_after_the_backoff() -> None:
    error = {"type": "E", "message": "m", "traceback": None}
    first = lifecycle.fail_attempt(running(retries=2, retry_delay=2, retry_backoff=3), error, T1)
    assert (first.state, first.attempt, first.error, first.pid) == (State.QUEUED, 2, error, None)
    assert (parse_time(first.next_try_at) - parse_time(T1)).total_seconds() == 2  # type: ignore[arg-type]
    second = lifecycle.fail_attempt(lifecycle.start(first, 1, 1, T1), error, T1)
    assert (parse_time(second.next_try_at) - parse_time(T1)).total_seconds() == 6  # type: ignore[arg-type]
    third = lifecycle.fail_attempt(lifecycle.start(second, 1, 1, T1), error, T1)
    assert (third.state, third.attempt, third.next_try_at, third.finished_at) == (State.FAILED, 3, None, T1)


def test_cancel_and_retry() -> None:
    cancelled = lifecycle.cancel(running(), T1)
    assert cancelled.state is State.CANCELLED and cancelled.error["type"] == "Cancelled"  # type: ignore[index]
    again = lifecycle.retry(cancelled, T1)
    assert (again.state, again.attempt, again.error, again.finished_at) == (State.QUEUED, 1, None, None)


def test_a_done_job_run_again_forgets_its_result_and_progress() -> None:
    again = lifecycle.retry_if_final(T1)(lifecycle.succeed(running(), {"x": 1}, T1))
    assert again is not None
    assert (again.state, again.attempt, again.result, again.progress, again.started_at) == (
        State.QUEUED, 1, None, None, None)
    assert lifecycle.retry_if_final(T1)(running()) is None


def test_an_interrupted_attempt_is_requeued_without_counting() -> None:
    status = lifecycle.interrupt(running(), T1)
    assert (status.state, status.attempt, status.pid) == (State.QUEUED, 1, None)


def test_a_lost_attempt_runs_again_but_not_forever() -> None:
    status = running()
    for attempt in range(1, 1 + lifecycle.EXTRA_ATTEMPTS_AFTER_CRASH):
        status = lifecycle.recover_lost(status, T1, "gone")
        assert (status.state, status.attempt) == (State.QUEUED, attempt + 1)
        status = lifecycle.start(status, 1, 1, T1)
    final = lifecycle.recover_lost(status, T1, "gone")
    assert final.state is State.FAILED and final.error["type"] == "Interrupted"  # type: ignore[index]


def test_settling_an_attempt_keeps_what_the_worker_wrote_itself() -> None:
    error = {"type": "E", "message": "m", "traceback": None}
    fail = lambda s: lifecycle.fail_attempt(s, error, T1)  # noqa: E731
    done = lifecycle.succeed(running(), 1, T1)
    assert lifecycle.settle_attempt(done, 1, fail, T1) is None
    retry_queued = lifecycle.fail_attempt(running(retries=2), error, T1)  # the worker queued attempt 2
    assert lifecycle.settle_attempt(retry_queued, 1, fail, T1) is None
    still_running = lifecycle.settle_attempt(running(retries=2), 1, fail, T1)
    assert still_running is not None and (still_running.state, still_running.attempt) == (State.QUEUED, 2)
    handed_over = lifecycle.settle_attempt(queued(), 1, fail, T1)  # `running` not yet written
    assert handed_over is not None and (handed_over.state, handed_over.started_at) == (State.FAILED, T1)
    never_started = lifecycle.settle_attempt(queued(), 1, lambda s: lifecycle.cancel(s, T1), T1, started=False)
    assert never_started is not None and (never_started.state, never_started.started_at) == (State.CANCELLED, None)


def test_a_timeout_is_a_failed_attempt_that_says_so() -> None:
    status = lifecycle.time_out(running(timeout=0.5), T1)
    assert status.state is State.FAILED and status.error == {
        "type": "Timeout", "message": "attempt 1 timed out after 0.5s", "traceback": None}


# ---------------------------------------------------------------- who may change what

@pytest.mark.parametrize("role, before, after, allowed", [
    (lifecycle.Role.WORKER, State.QUEUED, State.RUNNING, True),
    (lifecycle.Role.WORKER, State.RUNNING, State.DONE, True),
    (lifecycle.Role.WORKER, State.RUNNING, State.QUEUED, True),   # its own failed attempt, retried
    (lifecycle.Role.WORKER, State.QUEUED, State.CANCELLED, False),  # a kill is the manager's
    (lifecycle.Role.WORKER, State.RUNNING, State.CANCELLED, False),
    (lifecycle.Role.WORKER, State.FAILED, State.QUEUED, False),
    (lifecycle.Role.WORKER, None, State.QUEUED, False),
    (lifecycle.Role.CLIENT, None, State.QUEUED, True),
    (lifecycle.Role.CLIENT, State.QUEUED, State.CANCELLED, True),
    (lifecycle.Role.CLIENT, State.FAILED, State.QUEUED, True),
    (lifecycle.Role.CLIENT, State.RUNNING, State.CANCELLED, False),  # something runs it: only its owner stops it
    (lifecycle.Role.CLIENT, State.QUEUED, State.RUNNING, False),
    (lifecycle.Role.INLINE, State.RUNNING, State.CANCELLED, True),
    (lifecycle.Role.INLINE, State.CANCELLED, State.QUEUED, False),  # `pool retry` is a client's
    (lifecycle.Role.INLINE, None, State.QUEUED, False),
    (lifecycle.Role.MANAGER, None, State.QUEUED, True),
    (lifecycle.Role.MANAGER, State.RUNNING, State.QUEUED, True),
    (lifecycle.Role.MANAGER, State.DONE, State.QUEUED, True),  # pool retry of a done job: run it again
    (lifecycle.Role.WORKER, State.DONE, State.QUEUED, False),
    (lifecycle.Role.INLINE, State.DONE, State.QUEUED, False),
])
def test_each_role_may_make_only_the_changes_of_its_part(
        role: lifecycle.Role, before: State | None, after: State, allowed: bool) -> None:
    if allowed:
        lifecycle.check_role(role, before, after)
    else:
        with pytest.raises(InvalidTransition, match=f"the {role.value} may not move a job"):
            lifecycle.check_role(role, before, after)


def test_every_role_may_write_progress_without_a_state_change() -> None:
    for role in lifecycle.Role:
        lifecycle.check_role(role, State.RUNNING, State.RUNNING)


def test_a_retry_delay_never_overflows() -> None:
    status = queued(retries=1000, retry_delay=1e6, retry_backoff=1000)
    for attempt in (1, 2, 500, 1001):
        assert 0 <= lifecycle.retry_delay(dataclasses.replace(status, attempt=attempt)) <= MAX_SECONDS
    failed = lifecycle.fail_attempt(dataclasses.replace(running(retries=1000, retry_delay=1e6, retry_backoff=1000),
                                                        attempt=900), {"type": "E", "message": "m"}, T1)
    assert failed.state is State.QUEUED and failed.next_try_at is not None


def test_an_interrupted_attempt_counts_after_too_many_interruptions() -> None:
    status = running()
    for n in range(1, lifecycle.MAX_INTERRUPTIONS + 1):
        status = lifecycle.interrupt(status, T1)
        assert (status.state, status.attempt, status.interruptions) == (State.QUEUED, 1, n)
        status = lifecycle.start(status, 1, None, T1)
    status = lifecycle.interrupt(status, T1)
    assert (status.attempt, status.interruptions, status.error["type"]) == (2, 0, "Interrupted")  # type: ignore[index]


def test_queued_again_says_nothing_of_the_attempt_before() -> None:
    halfway = dataclasses.replace(running(retries=1), progress=0.6, message="60%")
    again = lifecycle.fail_attempt(halfway, {"type": "E", "message": "m"}, T1)
    assert (again.state, again.progress, again.started_at, again.pid) == (State.QUEUED, None, None, None)


@pytest.mark.parametrize("after, ran", [
    (lambda q: lifecycle.succeed(lifecycle.start(q, 1, None, T1), 1, T1), True),
    (lambda q: lifecycle.fail_attempt(lifecycle.start(q, 1, None, T1), {"type": "E", "message": "m"}, T1), True),
    (lambda q: lifecycle.interrupt(lifecycle.start(q, 1, None, T1), T1), True),
    (lambda q: lifecycle.cancel(lifecycle.start(q, 1, None, T1), T1), True),
    (lambda q: lifecycle.cancel(q, T1), False),
    (lambda q: dataclasses.replace(q, message="edited"), False),
])
def test_a_write_over_queued_tells_whether_an_attempt_ran_on_the_way(after: Any, ran: bool) -> None:
    before = queued(retries=3)
    assert lifecycle.passed_through_running(before, after(before)) is ran


def test_the_ledger_tells_the_start_and_the_outcome_of_a_short_attempt() -> None:
    before = queued()
    done = lifecycle.succeed(lifecycle.start(before, 9, None, T0), 1, T1)
    told = transitions_between(before, done, start_reason="worker pid 9")
    assert [(t.before, t.after, t.reason, t.time) for t in told] == [
        (State.QUEUED, State.RUNNING, "worker pid 9", T0), (State.RUNNING, State.DONE, "finished", T1)]
    assert transitions_between(done, done) == []


def test_a_failure_is_described_with_its_kind() -> None:
    failed = lifecycle.fail_attempt(running(), {"type": "KeyError", "message": "7"}, T1)
    assert lifecycle.describe(failed) == "KeyError: 7"
    assert lifecycle.describe(lifecycle.cancel(queued(), T1)) == "cancelled by request"


# ---------------------------------------------------------------- jobs that wait for their time
def test_a_job_with_a_time_still_to_come_waits_for_it_and_one_whose_time_passed_is_queued() -> None:
    now = utc_now()
    later = new_status(parse_job({"task": "m:f", "id": "j", "delay": "2h"}, "t", "t"), now)
    assert later.state is State.WAITING and later.spec.delay == 7200.0
    assert (parse_time(later.waits["until"]) - parse_time(now)).total_seconds() == 7200  # type: ignore[index]
    past = new_status(parse_job({"task": "m:f", "id": "j", "at": "2026-01-01T10:00:00+01:00"}, "t", "t"), now)
    assert (past.state, past.waits, past.spec.at) == (State.QUEUED, None, "2026-01-01T09:00:00.000000Z")
    # delay counts from the submission: a file dropped long ago with a short delay is due
    assert new_status(parse_job({"task": "m:f", "id": "j", "delay": 60}, "t", "t"), T0).state is State.QUEUED


def test_a_waiting_job_is_released_into_the_queue_or_cancelled_and_says_so_no_more() -> None:
    waiting = in_state(State.WAITING)
    released = lifecycle.release(T1)(waiting)
    assert released is not None and (released.state, released.waits) == (State.QUEUED, None)
    assert lifecycle.release(T1)(released) is None  # released once
    cancelled = lifecycle.cancel_if_queued(T1)(waiting)
    assert cancelled is not None and (cancelled.state, cancelled.waits, cancelled.started_at) == (
        State.CANCELLED, None, None)


def test_who_may_move_a_waiting_job() -> None:
    may = lifecycle.MAY
    assert (State.WAITING, State.QUEUED) in may[lifecycle.Role.MANAGER]
    assert (State.WAITING, State.CANCELLED) in may[lifecycle.Role.CLIENT]  # pool kill with no manager
    assert (State.WAITING, State.QUEUED) not in may[lifecycle.Role.CLIENT]  # only the manager releases
    assert not {pair for pair in may[lifecycle.Role.WORKER] if State.WAITING in pair}
