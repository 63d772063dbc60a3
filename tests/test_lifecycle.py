"""The transition table and the outcome of attempts: pure."""

from __future__ import annotations

import pytest

from pool import lifecycle
from pool.errors import InvalidTransition
from pool.model import JobStatus, State, new_status, parse_job, parse_time

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
        State.QUEUED: queued,
        State.RUNNING: running,
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


def test_done_is_final_and_failed_or_cancelled_only_go_back_by_retry() -> None:
    assert lifecycle.TRANSITIONS[State.DONE] == frozenset()
    assert lifecycle.TRANSITIONS[State.FAILED] == {State.QUEUED}
    assert lifecycle.TRANSITIONS[State.CANCELLED] == {State.QUEUED}


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
