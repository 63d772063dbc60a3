"""The manager stepped by hand over each real engine: what every engine must do for the
manager to keep its promises, checked the same way for local workers and for the relay
engine (tests/relay_engine.py), whose attempts never touch the spool and report only
through the executor protocol.

As in test_manager_steps, the test calls ``Manager.step`` itself (no watchdog thread, no
signal handlers); unlike there, the executor is real: real processes run real jobs of
tests/pooltest_tasks.py, and each step waits on the manager's own wait for what they say.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from conftest import ENGINES, drop, events_of, job, pid_alive, status_doc
from pool.manager import Manager, ManagerConfig
from pool.requests import RequestKind
from pool.stopping import StopMode
from waiting import wait_until

pytestmark = pytest.mark.every_engine


class Driven:
    """A manager on a real spool and a real engine, stepped by hand."""

    def __init__(self, spool_dir: Path, engine: str, **config: Any) -> None:
        self.spool_dir = spool_dir
        settings = {"workers": 2, "task_modules": ("pooltest_tasks",), "allow_commands": True, "settle": 0.0,
                    "rescan_interval": 0.05, **config}
        self.manager = Manager(ManagerConfig(spool=str(spool_dir), engine=ENGINES[engine], **settings))
        self.manager.spool.create()
        self.manager.open()

    def submit(self, job_id: str, task: str, *args: object, **fields: object) -> None:
        drop(self.spool_dir, f"{job_id}.json", job(task, *args, id=job_id, **fields))

    def submit_command(self, job_id: str, argv: list[str], **fields: object) -> None:
        drop(self.spool_dir, f"{job_id}.json", {"command": argv, "id": job_id, **fields})

    def until(self, done: Callable[[], Any], what: str, timeout: float = 30) -> Any:
        """Step the manager (each step after its own wait) until ``done()`` is true."""
        def stepped() -> Any:
            self.manager.rescan_due = True  # no watchdog here: look at the folders every step
            self.manager.step(self.manager.wait_for_wake())
            return done()

        return wait_until(stepped, timeout, what)

    def doc(self, job_id: str) -> dict[str, Any]:
        found = status_doc(self.spool_dir, job_id)
        assert found is not None, f"no status for {job_id}"
        return found

    def state(self, job_id: str) -> str | None:
        found = status_doc(self.spool_dir, job_id)
        return found["state"] if found else None

    def kill(self, job_id: str) -> None:
        self.manager.spool.box.file(RequestKind.KILL, job_id)

    def close(self) -> None:
        self.manager.close()


@pytest.fixture
def driven(spool_dir: Path, engine: str) -> Iterator[Callable[..., Driven]]:
    made: list[Driven] = []

    def make(**config: Any) -> Driven:
        made.append(Driven(spool_dir, engine, **config))
        return made[-1]

    yield make
    for manager in made:
        manager.close()


def transitions(spool_dir: Path, job_id: str) -> list[tuple[str | None, str, int]]:
    return [(e["from"], e["to"], e["attempt"]) for e in events_of(spool_dir, job_id)]


def test_a_job_runs_to_its_result_and_every_change_is_heard_once(driven: Callable[..., Driven]) -> None:
    pool = driven()
    pool.submit("sum", "add", 2, 3)
    heard = [(None, "queued", 1), ("queued", "running", 1), ("running", "done", 1)]
    pool.until(lambda: transitions(pool.spool_dir, "sum") == heard, "every change heard")
    pool.until(lambda: not pool.manager.executor.busy(), "the attempt over")
    assert transitions(pool.spool_dir, "sum") == heard  # and none twice
    doc = pool.doc("sum")
    assert (doc["result"], doc["progress"], doc["attempt"], doc["error"]) == (5, 1.0, 1, None)
    assert doc["started_at"] and doc["finished_at"]
    assert (pool.spool_dir / "logs" / "sum.log").read_text() == "adding 2 and 3\n"


def test_progress_is_in_the_status_while_the_job_runs(driven: Callable[..., Driven], tmp_path: Path) -> None:
    pool = driven()
    pool.submit("half", "halfway", str(tmp_path / "gate"))
    doc = pool.until(lambda: (d := status_doc(pool.spool_dir, "half")) and d["progress"] and d, "progress")
    assert (doc["state"], doc["progress"], doc["message"]) == ("running", 0.3, "three of ten")
    (tmp_path / "gate").touch()
    pool.until(lambda: pool.state("half") == "done", "done")


def test_a_command_prints_into_its_log_and_its_progress_is_read(driven: Callable[..., Driven]) -> None:
    pool = driven()
    pool.submit_command("c", ["sh", "-c", "echo 40%; echo 'half way'; echo 100%"])
    pool.until(lambda: pool.state("c") == "done", "done")
    doc = pool.doc("c")
    assert (doc["exit_code"], doc["progress"], doc["message"]) == (0, 1.0, "100%")
    assert (pool.spool_dir / "logs" / "c.log").read_text() == "40%\nhalf way\n100%\n"


def test_an_attempt_whose_runner_dies_once_it_began_counts(driven: Callable[..., Driven]) -> None:
    pool = driven()
    pool.submit("d", "exit_hard", 3, retries=1, retry_delay=0)
    pool.until(lambda: pool.state("d") == "failed", "failed after both attempts")
    doc = pool.doc("d")
    assert (doc["attempt"], doc["error"]["type"]) == (2, "WorkerDied")
    assert "exited with code 3" in doc["error"]["message"]
    log = (pool.spool_dir / "logs" / "d.log").read_text()
    assert "--- pool: attempt 2 of 2 ---" in log


def test_a_running_job_killed_ends_cancelled_once_everything_it_started_is_gone(
        driven: Callable[..., Driven], tmp_path: Path) -> None:
    pool = driven()
    child = tmp_path / "child.pid"
    pool.submit_command("k", ["sh", "-c", f"sleep 600 & echo $! > {child}; wait"])
    pool.until(lambda: child.exists() and child.read_text().strip(), "its child started")
    grandchild = int(child.read_text())
    pool.kill("k")
    pool.until(lambda: pool.state("k") == "cancelled", "cancelled")
    assert not pid_alive(grandchild)  # gone before the job was said to be cancelled
    assert pool.doc("k")["error"]["type"] == "Cancelled"
    assert transitions(pool.spool_dir, "k")[-1] == ("running", "cancelled", 1)


def test_a_queued_job_killed_never_begins(driven: Callable[..., Driven], tmp_path: Path) -> None:
    pool = driven(workers=1)
    gate = tmp_path / "gate"
    pool.submit("first", "hold", str(gate))
    pool.until(lambda: pool.state("first") == "running", "first running")
    pool.submit("second", "add", 1, 1)
    pool.until(lambda: pool.state("second") == "queued", "second queued")
    pool.kill("second")
    pool.until(lambda: pool.state("second") == "cancelled", "second cancelled")
    gate.touch()
    pool.until(lambda: pool.state("first") == "done", "first done")
    assert pool.doc("second")["started_at"] is None
    assert not (pool.spool_dir / "logs" / "second.log").exists()


def test_a_timeout_fails_the_attempt_and_the_retry_runs(driven: Callable[..., Driven]) -> None:
    pool = driven(kill_grace=0.2)
    pool.submit("t", "forever", timeout=0.3, retries=1, retry_delay=0)
    pool.until(lambda: pool.state("t") == "failed", "failed after both attempts timed out")
    doc = pool.doc("t")
    assert (doc["attempt"], doc["error"]["type"]) == (2, "Timeout")


def test_a_stop_of_the_manager_puts_a_running_attempt_back_uncounted(
        driven: Callable[..., Driven], tmp_path: Path) -> None:
    pool = driven(shutdown_grace=0.0, kill_grace=0.2)
    pool.submit("g", "hold", str(tmp_path / "gate"))
    pid = pool.until(lambda: (d := status_doc(pool.spool_dir, "g")) and d["state"] == "running" and d["pid"],
                     "running")
    pool.manager.stop_requested = 1
    pool.until(lambda: pool.manager.finished(), "the manager's stop")
    doc = pool.doc("g")
    assert (doc["state"], doc["attempt"], doc["interruptions"]) == ("queued", 1, 1)
    assert not pid_alive(pid)


def test_a_drain_lets_running_attempts_end_and_begins_nothing_more(
        driven: Callable[..., Driven], tmp_path: Path) -> None:
    pool = driven(workers=1, shutdown_grace=0.0)
    gate = tmp_path / "gate"
    pool.submit("g", "hold", str(gate))
    pool.until(lambda: pool.state("g") == "running", "running")
    pool.submit("q", "add", 1, 2)
    pool.until(lambda: pool.state("q") == "queued", "q taken in")  # and, locally, sent ahead to g's worker
    pool.manager.stop_mode, pool.manager.stop_requested = StopMode.DRAIN, 1
    pool.until(lambda: pool.manager.stopping_said is StopMode.DRAIN, "draining")
    assert not pool.manager.finished()
    gate.touch()
    pool.until(lambda: pool.manager.finished(), "the drain over")
    assert (pool.doc("g")["state"], pool.doc("g")["interruptions"], pool.state("q")) == ("done", 0, "queued")


def test_a_detach_leaves_the_attempt_running_where_the_engine_can_and_else_puts_it_back(
        driven: Callable[..., Driven], tmp_path: Path) -> None:
    pool = driven(shutdown_grace=0.0, kill_grace=0.2)
    gate = tmp_path / "gate"
    pool.submit("g", "hold", str(gate))
    pid = pool.until(lambda: (d := status_doc(pool.spool_dir, "g")) and d["state"] == "running" and d["pid"],
                     "running")
    pool.manager.stop_mode, pool.manager.stop_requested = StopMode.DETACH, 1
    pool.until(lambda: pool.manager.finished(), "the manager's stop")
    pool.close()
    if pool.manager.executor.leaves_running:
        assert pid_alive(pid) and pool.state("g") == "running"
        gate.touch()
        wait_until(lambda: pool.state("g") == "done", what="g done with no manager")
        assert pool.doc("g")["interruptions"] == 0
    else:  # it said why, and did what an interrupt does
        doc = pool.doc("g")
        assert (doc["state"], doc["attempt"], doc["interruptions"]) == ("queued", 1, 1) and not pid_alive(pid)


def test_more_workers_run_more_attempts_at_once_with_no_restart(
        driven: Callable[..., Driven], tmp_path: Path) -> None:
    pool = driven(workers=1)
    gate = tmp_path / "gate"
    pool.submit("a", "hold", str(gate))
    pool.until(lambda: pool.state("a") == "running", "a running")
    pool.manager.spool.box.file(RequestKind.WORKERS, "2")
    pool.submit("b", "hold", str(gate))
    pool.until(lambda: pool.state("b") == "running", "b running beside a")
    assert pool.state("a") == "running" and pool.manager.serving.workers == 2
    gate.touch()
    pool.until(lambda: pool.state("a") == pool.state("b") == "done", "both done")
