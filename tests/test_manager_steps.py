"""The manager stepped by hand: a fake executor, time standing still, a real spool.

As huey's tests step their consumer with ``now`` passed in, these call ``Manager.step``
with a clock they move themselves, and tell the manager what the executor "saw" (an
attempt began, ended this way or that). So the trickiest paths (a job sent ahead and
cancelled, a dead worker's reasons, crash accounting, timeouts) run in milliseconds,
with no process but this one.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from conftest import drop, status_doc, wait_until

from pool import lifecycle
from pool.executor import (
    Began,
    Completed,
    Ended,
    ExecutorEvent,
    NotBegun,
    Outcome,
    Progress,
    Stopped,
    Stopping,
    StopReason,
    WorkerDied,
    WorkerFailed,
)
from pool.manager import Manager, ManagerConfig
from pool.model import JobSpec, JobStatus, State
from pool.requests import RequestKind
from pool.watch import COMPLETE


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.wall_at_start = time.time()

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.wall_at_start + self.now - 1000.0


class FakeExecutor:
    """Takes up to ``slots`` attempts; a test says how each one goes."""

    def __init__(self, slots: int = 1) -> None:
        self.slots = slots
        self.held: dict[str, JobStatus] = {}
        self.began: set[str] = set()
        self.paused: set[str] = set()
        self.events: list[ExecutorEvent] = []
        self.stops: list[tuple[str, StopReason, float]] = []

    leaves_running = False

    def open(self, wake: Any) -> None: ...
    def close(self, leave_running: bool = False) -> None: ...

    def resize(self, workers: int) -> None:
        self.slots = workers

    def room(self, first: JobStatus) -> int:
        return self.slots - len(self.held)

    def start(self, job: JobStatus, now: float) -> None:
        self.held[job.id] = job

    def begin(self, job_id: str, now: float) -> None:
        self.began.add(job_id)
        self.events.append(Began(job_id, self.held[job_id].attempt, now))

    def end(self, job_id: str, outcome: Outcome) -> None:
        job = self.held.pop(job_id)
        self.began.discard(job_id)
        self.events.append(Ended(job_id, job.attempt, outcome))

    def stop(self, job_id: str, reason: StopReason, grace: float, now: float) -> Stopping | None:
        if job_id not in self.held:
            return None
        if job_id not in self.began:
            return Stopping(began=False)
        self.stops.append((job_id, reason, grace))
        return Stopping(began=True, kill_at=now + grace)

    def take_back(self, job_id: str) -> bool:
        return False

    def pause(self, job_id: str) -> bool:
        if job_id not in self.began:
            return False
        self.paused.add(job_id)
        return True

    def resume(self, job_id: str) -> bool:
        self.paused.discard(job_id)
        return job_id in self.began

    def recover(self, job: JobStatus, now: float) -> bool:
        return False

    def holds(self, job_id: str) -> bool:
        return job_id in self.held

    def hosts(self) -> list[dict[str, Any]] | None:
        return None

    def trouble(self) -> str | None:
        return None

    def busy(self) -> bool:
        return bool(self.held)

    def running_ids(self) -> list[str]:
        return sorted(self.began)

    def waitables(self) -> list[Any]:
        return []

    def next_deadline(self, now: float) -> float | None:
        return None

    def collect(self, ready: list[Any], now: float) -> list[ExecutorEvent]:
        events, self.events = self.events, []
        return events


class Stepped:
    """A manager on a real spool, stepped by hand."""

    made: ClassVar[list[Stepped]] = []  # closed after each test (``closed_after``)

    def __init__(self, spool_dir: Path, slots: int = 1, **config: Any) -> None:
        self.spool_dir = spool_dir
        self.clock = FakeClock()
        self.executor = FakeExecutor(slots)
        self.manager = Manager(ManagerConfig(spool=str(spool_dir), **config), self.executor, self.clock)
        self.manager.spool.create()
        self.manager.open()
        Stepped.made.append(self)

    def close(self) -> None:
        """What its manager holds open: its folders and its wake pipe (a test process
        that made hundreds of them ran out of descriptors select() can watch)."""
        if self not in Stepped.made:
            return  # closed already
        Stepped.made.remove(self)
        self.manager.close()
        self.manager.spool.close()
        for fd in (self.manager.wake_r, self.manager.wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def step(self, after: float = 0.0) -> None:
        self.clock.now += after
        self.manager.rescan_due = True  # no watchdog here: look at the folders every step
        self.manager.step()

    def submit(self, job_id: str, **fields: Any) -> None:
        drop(self.spool_dir, f"{job_id}.json", {"task": "m:f", "id": job_id, **fields})

    def doc(self, job_id: str) -> dict[str, Any]:
        found = status_doc(self.spool_dir, job_id)
        assert found is not None
        return found

    def events(self, job_id: str) -> list[tuple[str | None, str, int, str]]:
        lines = (self.spool_dir / "events.jsonl").read_bytes().splitlines()
        return [(e["from"], e["to"], e["attempt"], e["reason"]) for e in map(orjson.loads, lines) if e["id"] == job_id]


@pytest.fixture(autouse=True)
def closed_after() -> Iterator[None]:
    """Every stepped manager a test made is closed after it."""
    yield
    while Stepped.made:
        Stepped.made[-1].close()


@pytest.fixture
def stepped(tmp_path: Path) -> Iterator[Stepped]:
    yield Stepped(tmp_path / "spool", slots=2, any_task=True)  # any task is served


def test_a_job_handed_over_but_not_begun_is_cancelled_on_disk_and_never_counted(stepped: Stepped) -> None:
    stepped.submit("ahead")
    stepped.step()
    assert stepped.executor.held.keys() == {"ahead"}  # handed over; its worker has not begun it
    stepped.manager.spool.box.file(lifecycle_kill(), "ahead")
    stepped.step()
    assert stepped.doc("ahead")["state"] == "cancelled"  # the worker reads this before it starts anything
    assert stepped.executor.stops == []
    stepped.executor.end("ahead", NotBegun(State.CANCELLED, "it is cancelled"))
    stepped.step()
    doc = stepped.doc("ahead")
    assert (doc["state"], doc["attempt"], doc["started_at"]) == ("cancelled", 1, None)
    assert not (stepped.spool_dir / "requests" / "kill-ahead").exists()
    assert stepped.events("ahead") == [(None, "queued", 1, "accepted"),
                                       ("queued", "cancelled", 1, "cancelled by request")]


def test_a_kill_filed_before_its_job_came_holds_when_the_jobs_file_event_is_heard_first(stepped: Stepped) -> None:
    """incoming/ and requests/ are watched apart, their events unordered: the job's was
    heard, the kill's not yet (seen in CI: the job ran once before its kill)."""
    stepped.manager.spool.box.file(lifecycle_kill(), "late")
    stepped.submit("late")
    stepped.manager.rescan_due, stepped.manager.next_rescan = False, float("inf")  # no look of its own
    stepped.manager.handler.flags[str(stepped.manager.spool.requests)] = False  # requests/'s not heard yet
    stepped.manager.control.recheck_at = None
    assert stepped.manager.intake is not None
    stepped.manager.intake.notes.append(("late.json", COMPLETE))  # incoming/'s event alone
    stepped.manager.step()
    assert "late" not in stepped.executor.held  # never handed over
    assert stepped.doc("late")["state"] == "cancelled"


def test_a_kill_of_a_running_job_stops_it_and_records_why_before_the_end(stepped: Stepped) -> None:
    stepped.submit("r")
    stepped.step()
    stepped.executor.begin("r", stepped.clock.now)
    stepped.manager.spool.box.file(lifecycle_kill(), "r", grace=2.5)
    stepped.step()
    assert stepped.executor.stops == [("r", StopReason.CANCEL, 2.5)]
    assert stepped.doc("r")["state"] == "queued"  # `running` not written yet: a short job
    stepped.executor.end("r", Stopped(StopReason.CANCEL, began=True))
    stepped.step()
    assert stepped.doc("r")["state"] == "cancelled"
    assert [e[:2] for e in stepped.events("r")] == [(None, "queued"), ("queued", "running"), ("running", "cancelled")]


def test_a_kill_is_said_once_however_often_its_request_is_read(
        stepped: Stepped, caplog: pytest.LogCaptureFixture) -> None:
    """With `pool serve --kill-grace 60` and a job that shrugs off SIGTERM, the manager said
    "cancelling" again at every rescan while it waited out the grace."""
    stepped.submit("r")
    stepped.step()
    stepped.executor.begin("r", stepped.clock.now)
    stepped.manager.spool.box.file(lifecycle_kill(), "r", grace=60)
    with caplog.at_level("INFO", logger="pool.control"):
        for _ in range(5):
            stepped.step(after=6)  # every step looks at requests/ again, as a rescan does
    said = [r.getMessage() for r in caplog.records if "cancelling" in r.getMessage()]
    assert said == ["job r: cancelling (SIGTERM, SIGKILL after 60s)"]
    assert (stepped.spool_dir / "requests" / "kill-r").exists()  # kept until the job is final


@pytest.mark.parametrize("began, expected", [
    (True, ("queued", 2, "WorkerDied")),   # it began: a failed attempt, retried
    (False, ("queued", 1, None)),          # it never began: queued again, uncounted
])
def test_a_dead_worker_counts_the_attempt_only_if_it_began(
        stepped: Stepped, began: bool, expected: tuple[str, int, str | None]) -> None:
    stepped.submit("d", retries=2, retry_delay=0)
    stepped.step()
    stepped.executor.begin("d", stepped.clock.now)
    stepped.executor.end("d", WorkerDied("worker process 4242 was killed by SIGKILL", began))
    stepped.step()
    doc = stepped.doc("d")
    assert (doc["state"], doc["attempt"], doc["error"] and doc["error"]["type"]) == expected
    assert "d" in stepped.executor.held  # queued again, and handed over at once


def test_without_retries_a_dead_worker_fails_the_job_once(stepped: Stepped) -> None:
    stepped.submit("d1")
    stepped.step()
    stepped.executor.begin("d1", stepped.clock.now)
    stepped.executor.end("d1", WorkerDied("worker process 4242 was killed by signal 40", True))
    stepped.step()
    doc = stepped.doc("d1")
    assert (doc["state"], doc["attempt"], doc["error"]["message"]) == (
        "failed", 1, "worker process 4242 was killed by signal 40")
    assert "d1" not in stepped.executor.held


def test_a_crashed_worker_counts_the_attempt(stepped: Stepped) -> None:
    stepped.submit("c")
    stepped.step()
    stepped.executor.begin("c", stepped.clock.now)
    stepped.executor.end("c", WorkerFailed("TypeError: cannot encode", began=True))
    stepped.step()
    doc = stepped.doc("c")
    assert (doc["state"], doc["error"]["type"], doc["attempt"]) == ("failed", "WorkerError", 1)


def test_an_outcome_the_worker_could_not_write_is_written_by_the_manager(stepped: Stepped) -> None:
    stepped.submit("u")
    stepped.step()
    stepped.executor.begin("u", stepped.clock.now)
    stepped.executor.end("u", Completed(lifecycle.Succeeded({"ok": 1}), Progress("u", 1, 0.5, "half"),
                                        why="OSError: [Errno 28] No space left on device"))
    stepped.step()
    doc = stepped.doc("u")
    assert (doc["state"], doc["result"], doc["attempt"], doc["message"]) == ("done", {"ok": 1}, 1, "half")
    assert [e[:2] for e in stepped.events("u")] == [(None, "queued"), ("queued", "running"), ("running", "done")]


def test_a_timeout_counts_from_when_the_attempt_began(stepped: Stepped) -> None:
    stepped.submit("t", timeout=10)
    stepped.step()
    stepped.step(after=30)  # handed over but not begun: no clock runs yet
    assert stepped.executor.stops == []
    stepped.executor.begin("t", stepped.clock.now)
    stepped.step(after=9.9)
    assert stepped.executor.stops == []
    stepped.step(after=0.2)
    assert stepped.executor.stops == [("t", StopReason.TIMEOUT, 5.0)]
    stepped.executor.end("t", Stopped(StopReason.TIMEOUT, began=True))
    stepped.step()
    doc = stepped.doc("t")
    assert (doc["state"], doc["error"]["type"]) == ("failed", "Timeout")


def test_a_retry_waits_for_its_time_on_the_managers_clock(stepped: Stepped) -> None:
    stepped.submit("w", retries=1, retry_delay=30, retry_backoff=1)
    stepped.step()
    stepped.executor.begin("w", stepped.clock.now)
    stepped.executor.end("w", WorkerDied("worker process 1 exited with code 1", True))
    stepped.step()
    assert stepped.doc("w")["state"] == "queued" and "w" not in stepped.executor.held
    stepped.step(after=29)
    assert "w" not in stepped.executor.held
    stepped.step(after=2)
    assert "w" in stepped.executor.held


def test_a_graceful_stop_puts_an_attempt_back_uncounted_but_not_forever(stepped: Stepped) -> None:
    stepped.submit("g", retries=0)
    for interruption in range(1, lifecycle.MAX_INTERRUPTIONS + 2):
        stepped.step()
        stepped.executor.begin("g", stepped.clock.now)
        stepped.executor.end("g", Stopped(StopReason.SHUTDOWN, began=True))
        stepped.step()
        doc = stepped.doc("g")
        if interruption <= lifecycle.MAX_INTERRUPTIONS:
            assert (doc["state"], doc["attempt"], doc["interruptions"]) == ("queued", 1, interruption)
    assert (doc["state"], doc["attempt"], doc["error"]["type"]) == ("queued", 2, "Interrupted")


def test_every_state_change_is_heard_once_with_its_real_before_and_after(stepped: Stepped) -> None:
    stepped.submit("h", retries=1, retry_delay=0)
    stepped.step()
    stepped.executor.begin("h", stepped.clock.now)
    stepped.executor.end("h", WorkerFailed("KeyError: 7", began=True))
    stepped.step()
    stepped.executor.begin("h", stepped.clock.now)
    stepped.executor.end("h", Stopped(StopReason.CANCEL, began=True))
    stepped.step()
    assert stepped.events("h") == [
        (None, "queued", 1, "accepted"),
        ("queued", "running", 1, "started"),
        ("running", "queued", 1, "KeyError: 7"),
        ("queued", "running", 2, "started"),
        ("running", "cancelled", 2, "cancelled by request"),
    ]


def test_bad_input_ends_the_job_not_the_manager(stepped: Stepped) -> None:
    (stepped.spool_dir / "status" / "broken.json").write_bytes(b'{"id": "broken", "state": 7}')
    (stepped.spool_dir / "requests" / "kill-nobody").write_bytes(b'{"grace": "5s"}')
    stepped = Stepped(stepped.spool_dir, slots=2, any_task=True)  # a manager starting on these files
    stepped.submit("fine")
    stepped.step()
    assert (stepped.spool_dir / "requests" / "kill-nobody").exists()  # the job may be on its way
    stepped.step(after=61)  # a kill for an id never seen is kept a minute, then dropped
    assert "fine" in stepped.executor.held
    assert not (stepped.spool_dir / "status" / "broken.json").exists()
    assert (stepped.spool_dir / "rejected" / "broken.status.json").exists()
    assert not (stepped.spool_dir / "requests" / "kill-nobody").exists()


def lifecycle_kill() -> Any:
    from pool.requests import RequestKind

    return RequestKind.KILL


class CrawlingClock(FakeClock):
    """A machine so loaded that every look at the clock finds a second gone: a turn's
    listing of incoming/ alone uses up its slice (seen under .ci/hunt: ten thousand
    files claimed, then every turn listed the folder and took nothing in)."""

    def monotonic(self) -> float:
        self.now += 1.0
        return self.now


def test_every_turn_takes_something_in_however_slow_the_machine(stepped: Stepped) -> None:
    stepped.clock = stepped.manager.ctx.clock = CrawlingClock()
    for n in range(3):
        stepped.submit(f"slow{n}")
    taken = []
    for _ in range(3):
        stepped.step()
        taken.append(sum(1 for n in range(3) if status_doc(stepped.spool_dir, f"slow{n}")))
    assert taken == [1, 2, 3], taken  # one file a turn at the least


# ---------------------------------------------------------------- a worker's orders
def test_a_worker_answers_a_take_back_at_once_and_runs_on_one_it_began() -> None:
    """A thread of the worker reads its pipe: a take-back of an attempt sent ahead is
    answered at once (Skipped), even while the attempt before it runs, and the attempt is
    never begun; one that comes after the attempt began is dropped (the manager hears it
    began, and that it ended). Once the pipe is closed, nothing more begins."""
    import multiprocessing

    from pool import messages as msg
    from pool.jobfile import parse_job
    from pool.model import new_status
    from pool.worker import Orders

    first, ahead, later = (new_status(parse_job({"task": "m:f", "id": name}, "x", "x"), "2027-01-15T08:00:00.000000Z")
                           for name in ("first", "ahead", "later"))
    manager_end, worker_end = multiprocessing.Pipe()
    orders = Orders(worker_end, worker_end.send_bytes)
    manager_end.send_bytes(msg.RunAttempt(first).encode())
    assert orders.next().job_id == "first"  # begun: "ahead" is sent while it runs
    manager_end.send_bytes(msg.RunAttempt(ahead).encode())
    manager_end.send_bytes(msg.TakeBack("ahead", 1).encode())
    answer = msg.decode_reply(manager_end.recv_bytes())  # before "first" has ended
    assert isinstance(answer, msg.Skipped) and (answer.job_id, answer.why) == ("ahead", msg.TAKEN_BACK)
    manager_end.send_bytes(msg.TakeBack("first", 1).encode())  # too late: it began
    manager_end.send_bytes(msg.RunAttempt(later).encode())
    assert orders.next().job_id == "later"
    manager_end.send_bytes(msg.RunAttempt(first).encode())
    manager_end.close()
    wait_until(lambda: orders.closed, what="the pipe's end read")
    with pytest.raises(EOFError):
        orders.next()


# ---------------------------------------------------------------- jobs that wait
T = "2027-01-15T08:00:00.000000Z"


def test_a_delayed_job_is_queued_at_its_time_and_not_a_moment_before(stepped: Stepped) -> None:
    stepped.submit("later", delay=3600)
    stepped.step()
    assert stepped.doc("later")["state"] == "waiting" and not stepped.executor.held
    deadline = stepped.manager.dispatch.next_deadline()
    assert deadline is not None
    assert 3599 < deadline - stepped.clock.now <= 3601  # the loop sleeps until then: no polling
    stepped.step(after=deadline - stepped.clock.now - 0.5)  # a timer that fires half a second early
    stepped.manager.dispatch.hold_until("later", stepped.clock.now)
    stepped.step()
    assert stepped.doc("later")["state"] == "waiting"  # not yet: looked at, and the timer set again
    stepped.step(after=0.5)
    assert stepped.doc("later")["state"] == "queued" and stepped.executor.held.keys() == {"later"}
    assert [e[:2] for e in stepped.events("later")] == [(None, "waiting"), ("waiting", "queued")]


def test_a_job_after_another_is_released_when_it_is_done_and_cancelled_when_it_fails(stepped: Stepped) -> None:
    stepped.submit("first")
    stepped.submit("second", after=["first"])
    stepped.submit("other", after=["second"])
    stepped.step()
    assert (stepped.doc("second")["state"], stepped.doc("other")["state"]) == ("waiting", "waiting")
    stepped.manager.ctx.ledger.change("first", lambda s: lifecycle.succeed(lifecycle.start(s, 1, None, T), 1, T))
    stepped.step()
    assert stepped.doc("second")["state"] == "queued"
    stepped.manager.ctx.ledger.change("second", lambda s: lifecycle.fail_attempt(
        lifecycle.start(s, 1, None, T), {"type": "E", "message": "m", "traceback": None}, T))
    stepped.step()
    assert stepped.doc("other")["error"]["message"] == "dependency second failed"


def test_events_put_off_by_a_held_log_bring_the_manager_back_soon(stepped: Stepped) -> None:
    """A worker appending its own events holds the log for microseconds; a manager that
    found it held kept its lines for its next turn, which for an idle manager came only
    with the rescan tick (seen in CI: a dependant's cancel missing from the log)."""
    import fcntl
    import os

    fd = os.open(stepped.spool_dir / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as an appending worker holds it
        stepped.submit("later", delay=3600)  # it waits: nothing else brings the manager back
        for _ in range(3):
            stepped.step()
        assert stepped.manager.spool.events.lines  # put off
        now = stepped.clock.now
        assert stepped.manager.next_deadline(now) <= now + 0.01
    finally:
        os.close(fd)
    stepped.step(after=0.01)
    assert [e[1] for e in stepped.events("later")] == ["waiting"]


# ---------------------------------------------------------------- needs
def finish(stepped: Stepped, job_id: str) -> None:
    stepped.executor.begin(job_id, stepped.clock.now)
    stepped.executor.end(job_id, Completed(lifecycle.Succeeded(None), Progress(job_id, 1, 1.0, None), why="test"))


def test_the_most_urgent_job_that_does_not_fit_holds_a_reservation_once_it_has_waited(tmp_path: Path) -> None:
    stepped = Stepped(tmp_path / "spool", slots=4, any_task=True, cpus=2.0, reserve_after=5.0)
    stepped.submit("one", needs={"cpus": 1})
    stepped.step()
    stepped.submit("big", needs={"cpus": 2})
    stepped.submit("small", needs={"cpus": 1})
    stepped.step()
    assert stepped.executor.held.keys() == {"one", "small"}  # small fills the gap: big has not waited yet
    finish(stepped, "small")
    stepped.step(after=6.0)  # big has waited 6 s: it holds what it waits for from now on
    stepped.submit("later", needs={"cpus": 1})
    stepped.step()
    assert stepped.executor.held.keys() == {"one"}  # later would fit beside one, but not beside big's claim
    finish(stepped, "one")
    stepped.step()
    assert stepped.executor.held.keys() == {"big"}
    finish(stepped, "big")
    stepped.step()
    assert stepped.executor.held.keys() == {"later"}


def test_a_job_that_needs_more_than_the_manager_has_holds_nothing_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Accepted by a manager given more (`pool serve --cpus 4`), served now by one given
    less: it waits for a manager with more, saying so once, and reserves nothing."""
    from pool.limits import Capacity

    stepped = Stepped(tmp_path / "spool", slots=4, any_task=True, cpus=4.0, reserve_after=0.0)
    stepped.submit("one", needs={"cpus": 1})
    stepped.step()
    stepped.submit("huge", needs={"cpus": 4})
    stepped.step()
    stepped.manager.dispatch.capacity = Capacity(stepped.manager.dispatch.capacity.memory, 2.0)
    stepped.submit("small", needs={"cpus": 1})
    for _ in range(3):
        stepped.step(after=10.0)
    assert stepped.executor.held.keys() == {"one", "small"}
    assert sum("job huge waits for a manager with more" in r.getMessage() for r in caplog.records) == 1


def test_between_rescans_a_turn_takes_the_files_heard_of_and_lists_no_folder(stepped: Stepped) -> None:
    """A file event names its file: the turn it wakes takes that file alone (a listing of
    incoming/ each turn, thousands of files deep, was most of what a file dropped among
    many cost). What no event named is found by the next rescan."""
    stepped.step()  # the first turn lists incoming/ (it found what came before the watches)
    intake = stepped.manager.intake
    assert intake is not None
    listings = []
    listing = stepped.manager.spool.drop.listing
    stepped.manager.spool.drop.listing = lambda: listings.append(1) or listing()  # type: ignore[method-assign]
    stepped.manager.rescan_due, stepped.manager.next_rescan = False, float("inf")
    stepped.submit("heard")
    stepped.submit("unheard")
    intake.notes.append(("heard.json", COMPLETE))
    stepped.manager.step()
    assert (stepped.doc("heard")["state"], listings) == ("queued", [])
    assert status_doc(stepped.spool_dir, "unheard") is None
    stepped.manager.rescan_due = True
    stepped.manager.step()
    assert (stepped.doc("unheard")["state"], listings) == ("queued", [1])


@pytest.mark.parametrize("rescan", [False, True], ids=["heard", "rescan"])
def test_files_heard_together_on_a_slow_turn_are_taken_in_the_order_they_were_heard(stepped: Stepped,
                                                                                   rescan: bool) -> None:
    """A turn that takes in one file and then hands out jobs must take the file heard
    first: an executor's first job alone, then the rest as a .jsonl, heard in one turn of
    a loaded manager (seen in CI: taken by name, the later two ran first, and the test
    waiting for the first two running never saw it). A rescan's turn, which lists the
    folder, takes the files heard first too."""
    stepped.step()  # the first turn lists incoming/
    stepped.clock = stepped.manager.ctx.clock = CrawlingClock()  # a slice ends after one file
    stepped.manager.rescan_due, stepped.manager.next_rescan = False, float("inf")
    intake = stepped.manager.intake
    assert intake is not None
    stepped.submit("zz-first")
    drop(stepped.spool_dir, "aa-second.jsonl",
         b'{"task": "m:f", "id": "aa-second"}\n{"task": "m:f", "id": "b-third"}\n')
    intake.notes.extend([("zz-first.json", COMPLETE), ("aa-second.jsonl", COMPLETE)])
    stepped.manager.rescan_due = rescan
    stepped.manager.step()
    assert list(stepped.executor.held) == ["zz-first"]


def bytes_a_queued_job(stepped: Stepped, lines: list[bytes]) -> float:
    """What the manager holds for each job of a batch of ``lines`` once all are queued."""
    drop(stepped.spool_dir, "batch.jsonl", b"\n".join(lines))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        while len(stepped.manager.dispatch.queue.jobs) < len(lines) or stepped.manager.intake.batches:  # type: ignore[union-attr]
            stepped.step()
        gc.collect()
        per_job = (tracemalloc.get_traced_memory()[0] - before) / len(lines)
    finally:
        tracemalloc.stop()
    return per_job


def test_a_queued_job_of_a_big_batch_costs_the_manager_little_memory(tmp_path: Path) -> None:
    """A million queued jobs must fit in a few hundred MB (issue 23: 1.33 GB before): what
    every job of a batch shares is held once (its empty kwargs, env and meta, its task's
    name), and the ids reserved while the batch came in are let go with their table."""
    stepped = Stepped(tmp_path / "spool", slots=0, any_task=True)  # nothing starts: all stay queued
    jobs = 2000
    per_job = bytes_a_queued_job(stepped, [b'{"task": "bench_tasks:noop"}'] * jobs)
    assert per_job < 700, f"{per_job:.0f} bytes a queued job"  # 938 before, 616 since


def queued_status(job_id: str, priority: int = 0, at: int = 0) -> JobStatus:
    created = f"2026-12-05T00:00:{at:02d}.000000Z"
    return JobStatus(spec=JobSpec(id=job_id, task="m:f", priority=priority), state=State.QUEUED, created_at=created,
                     updated_at=created)


def test_past_keep_whole_a_queued_job_is_kept_by_its_place_and_read_back_when_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pool import jobqueue

    monkeypatch.setattr(jobqueue, "KEEP_WHOLE", 2)
    on_disk = {f"j{n}": queued_status(f"j{n}", priority=n % 2, at=n) for n in range(6)}
    loads: list[str] = []

    def load(job_id: str) -> JobStatus | None:
        loads.append(job_id)
        return on_disk.get(job_id)

    queue = jobqueue.JobQueue(load=load)
    for status in on_disk.values():
        queue.push(status, 0.0, 0.0)
    assert [job_id for job_id, kept in queue.jobs.items() if kept is not None] == ["j0", "j1"]
    del on_disk["j3"]  # cancelled meanwhile, on disk: no longer queued, so never started
    order = [queue.pop().id for _ in range(5)]  # type: ignore[union-attr]
    assert order == ["j1", "j5", "j0", "j2", "j4"] and queue.pop() is None and not queue.jobs
    assert sorted(loads) == ["j2", "j3", "j4", "j5"]  # each read once, when first in its lane


def test_a_big_queue_costs_the_manager_a_place_a_job_and_runs_each_as_its_file_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past KEEP_WHOLE queued jobs, a job costs its place in the queue (issue 23: a million
    jobs in 600 MB); each is still started as its status says, and one killed meanwhile
    never starts."""
    from pool import jobqueue

    monkeypatch.setattr(jobqueue, "KEEP_WHOLE", 100)
    stepped = Stepped(tmp_path / "spool", slots=0, any_task=True)
    jobs = 2000
    per_job = bytes_a_queued_job(
        stepped, [b'{"task": "bench_tasks:noop", "id": "j%d", "priority": %d}' % (n, n % 3) for n in range(jobs)])
    assert per_job < 350, f"{per_job:.0f} bytes a queued job"
    stepped.manager.spool.box.file(lifecycle_kill(), "j1998")
    stepped.executor.slots = 1
    started = []
    for _ in range(jobs + 10):
        stepped.step()
        for job_id, status in list(stepped.executor.held.items()):
            assert status == stepped.manager.spool.read_status(job_id)  # as its file says
            started.append((-status.spec.priority, job_id))
            stepped.executor.end(job_id, Completed(lifecycle.Succeeded(None), Progress(job_id, 1, 1.0, None),
                                                   why="test"))
    assert len(started) == jobs - 1 and "j1998" not in {job_id for _, job_id in started}
    assert started == sorted(started, key=lambda s: (s[0], int(s[1][1:])))  # priority, then submission
    assert stepped.doc("j1998")["state"] == "cancelled"


def test_a_big_prune_has_the_manager_compact_its_index_then_not_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lines of pruned jobs would be parsed by every `pool status` until as many new
    ones came (which may be never): `pool prune` asks the manager to compact now."""
    from pool import housekeeping
    from pool.client import Spool
    from pool.finalindex import NAME

    monkeypatch.setattr(housekeeping, "WORTH_COMPACTING", 5)
    stepped = Stepped(tmp_path / "spool", slots=4, any_task=True)
    for n in range(8):
        stepped.submit(f"j{n}")
    index = stepped.spool_dir / "status" / NAME

    def lines() -> int:
        return len(index.read_bytes().splitlines()) if index.exists() else 0

    for _ in range(20):
        stepped.step()
        for job_id in list(stepped.executor.held):
            stepped.executor.end(job_id, Completed(lifecycle.Succeeded(None), Progress(job_id, 1, 1.0, None),
                                                   why="test"))
        if lines() == 8:
            break
    assert lines() == 8
    assert len(Spool(stepped.spool_dir).prune(0.0)) == 8
    assert stepped.manager.spool.box.is_pending(RequestKind.COMPACT, "index")
    for _ in range(5):
        stepped.step()
    assert lines() == 0 and not stepped.manager.spool.box.is_pending(RequestKind.COMPACT, "index")
    compacted = stepped.manager.final_index.began_at  # type: ignore[union-attr]
    stepped.manager.spool.box.file(RequestKind.COMPACT, "index")
    os.utime(stepped.manager.spool.requests / "compact-index", (compacted - 10, compacted - 10))
    stepped.step()  # asked before the last compaction began: nothing to do again
    assert stepped.manager.final_index.began_at == compacted  # type: ignore[union-attr]
