"""`pool pause` / `pool resume`: a running job's whole process group is stopped and its
timeout clock with it; a job not started is held; a paused job is killed, interrupted
and taken over by the next manager as a running one is, and stays paused."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from conftest import (
    Server,
    drop,
    events_of,
    job,
    made,
    pid_alive,
    run_pool,
    start_running,
    state_of,
    status_doc,
    wait_until,
)
from test_manager_steps import Stepped

from pool import lifecycle
from pool.client import Spool
from pool.executor import StopReason
from pool.requests import RequestKind


def group_states(pgid: int) -> set[str]:
    """The states (R, S, T, ...) of the live processes of a process group."""
    states = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            states.add(fields[0].decode())
    return states


def running_pgid(spool_dir: Path, job_id: str) -> int:
    doc = status_doc(spool_dir, job_id)
    assert doc is not None and doc["pid"], doc
    return int(doc["pid"])


def transitions(spool_dir: Path, job_id: str) -> list[tuple[str | None, str]]:
    return [(e["from"], e["to"]) for e in events_of(spool_dir, job_id)]


@pytest.mark.every_engine
def test_a_paused_job_is_stopped_whole_and_runs_on_when_resumed(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve()
    gate = tmp_path / "gate"
    start_running(spool_dir, "j", "halfway", str(gate))
    wait_until(lambda: (status_doc(spool_dir, "j") or {}).get("progress") == 0.3, what="j at 30%")
    assert run_pool(spool_dir, "pause", "j", check=True).stdout == "j: paused\n"
    pgid = running_pgid(spool_dir, "j")
    assert group_states(pgid) == {"T"}  # every process of it stopped
    gate.touch()  # it would end now, were it running
    assert state_of(spool_dir, "j") == "paused" and group_states(pgid) == {"T"}
    listed = run_pool(spool_dir, "status", check=True).stdout
    assert "paused" in listed.splitlines()[1]
    assert run_pool(spool_dir, "resume", "j", check=True).stdout in ("j: running\n", "j: done\n")
    # The manager appends a turn's events after the files it writes: its end's is awaited.
    wait_until(lambda: transitions(spool_dir, "j")[-1:] == [("running", "done")], what="j done after resuming")
    assert ("running", "paused") in transitions(spool_dir, "j")
    assert transitions(spool_dir, "j")[-2:] == [("paused", "running"), ("running", "done")]


@pytest.mark.every_engine
def test_a_paused_job_is_killed_whole(spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve("--kill-grace", "5")
    start_running(spool_dir, "k", "hold", str(tmp_path / "never"))
    pgid = running_pgid(spool_dir, "k")
    run_pool(spool_dir, "pause", "k", check=True)
    assert group_states(pgid) == {"T"}
    assert run_pool(spool_dir, "kill", "k", check=True).stdout == "k: cancelled\n"  # continued, so it takes SIGTERM
    assert group_states(pgid) == set()
    assert status_doc(spool_dir, "k")["error"]["message"] == "cancelled by request"  # type: ignore[index]


def test_a_job_not_started_is_held_until_resumed(spool_dir: Path, serve: Callable[..., Server],
                                                 tmp_path: Path) -> None:
    serve("--workers", "1")
    gate = tmp_path / "gate"
    start_running(spool_dir, "busy", "hold", str(gate))
    drop(spool_dir, "h.json", job("add", 1, 2, id="h"))
    wait_until(lambda: state_of(spool_dir, "h") == "queued", what="h queued behind busy")
    assert run_pool(spool_dir, "pause", "h", check=True).stdout == "h: held (it starts once resumed)\n"
    drop(spool_dir, "after.json", job("add", 2, 2, id="after"))
    gate.touch()
    wait_until(lambda: state_of(spool_dir, "after") == "done", what="a job submitted after it done")
    doc = status_doc(spool_dir, "h")
    assert doc is not None and doc["state"] == "waiting" and doc["waits"] == {"paused": True}
    row = [line for line in run_pool(spool_dir, "status", check=True).stdout.splitlines() if line.startswith("h ")]
    assert row[0].rstrip().endswith("held (pool resume h)")
    assert run_pool(spool_dir, "resume", "h", check=True).stdout in ("h: queued\n", "h: running\n", "h: done\n")
    wait_until(lambda: state_of(spool_dir, "h") == "done", what="h done once resumed")
    assert Spool(spool_dir).job("h").result() == 3


def test_a_pause_filed_before_its_job_is_taken_in_holds_it(spool_dir: Path, serve: Callable[..., Server]) -> None:
    made(spool_dir)
    drop(spool_dir, "early.json", job("add", 1, 1, id="early"))
    Spool(spool_dir).dir.box.file(RequestKind.PAUSE, "early")  # as `pool pause` files it, no manager serving
    serve("--workers", "1")
    wait_until(lambda: state_of(spool_dir, "early") is not None, what="early taken in")
    wait_until(lambda: not Spool(spool_dir).dir.box.is_pending(RequestKind.PAUSE, "early"), what="the pause taken")
    assert state_of(spool_dir, "early") == "waiting"  # held as it came in, before any worker could begin it


def test_a_paused_job_is_taken_over_still_paused_by_the_next_manager(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve()
    gate = tmp_path / "gate"
    worker = start_running(spool_dir, "p", "hold", str(gate))
    run_pool(spool_dir, "pause", "p", check=True)
    run_pool(spool_dir, "stop", "--detach", check=True)
    refused = run_pool(spool_dir, "resume", "p")  # nobody serves: only a manager continues it
    assert refused.returncode == 1 and "only a manager pauses and resumes a running job" in refused.stderr
    gate.touch()
    serve()
    assert pid_alive(worker) and state_of(spool_dir, "p") == "paused" and group_states(worker) == {"T"}
    run_pool(spool_dir, "resume", "p", check=True)
    wait_until(lambda: state_of(spool_dir, "p") == "done", what="p done under the next manager")
    doc = status_doc(spool_dir, "p")
    assert doc is not None and (doc["attempt"], doc["interruptions"]) == (1, 0)
    pauses = orjson.loads((spool_dir / "status" / "p.paused").read_bytes())
    assert pauses["since"] is None and pauses["seconds"] > 0


def test_a_stopped_job_said_running_is_continued_by_the_next_manager(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    """What a manager killed between stopping a job and writing `paused` leaves behind."""
    serve()
    gate = tmp_path / "gate"
    worker = start_running(spool_dir, "s", "hold", str(gate))
    run_pool(spool_dir, "stop", "--detach", check=True)
    os.killpg(worker, signal.SIGSTOP)  # its status still says running
    gate.touch()
    serve()
    wait_until(lambda: state_of(spool_dir, "s") == "done", what="s continued and done")


# ---------------------------------------------------------------- the timeout clock, stepped by hand
@pytest.fixture
def stepped(tmp_path: Path) -> Iterator[Stepped]:
    yield Stepped(tmp_path / "spool", slots=2, any_task=True)  # any task is served


def test_a_paused_attempt_does_not_time_out_and_its_clock_goes_on_when_resumed(stepped: Stepped) -> None:
    stepped.submit("t", timeout=10)
    stepped.step()
    stepped.executor.begin("t", stepped.clock.now)
    stepped.manager.ctx.ledger.change("t", lambda s: lifecycle.start(s, os.getpid(), None, s.updated_at))  # as a worker
    stepped.step(after=4)
    assert stepped.doc("t")["state"] == "running"
    box = Spool(stepped.spool_dir).dir.box
    box.file(RequestKind.PAUSE, "t")
    stepped.step()
    assert stepped.doc("t")["state"] == "paused" and "t" in stepped.executor.paused
    stepped.step(after=60)
    assert not stepped.executor.stops  # a minute paused: no timeout
    box.file(RequestKind.RESUME, "t")
    stepped.step()
    assert stepped.doc("t")["state"] == "running" and "t" not in stepped.executor.paused
    stepped.step(after=5.5)
    assert not stepped.executor.stops  # 4 + 5.5 seconds run: not yet
    stepped.step(after=1)
    assert [(job_id, reason) for job_id, reason, _ in stepped.executor.stops] == [("t", StopReason.TIMEOUT)]


def test_pausing_and_resuming_an_ended_or_unknown_job_says_so(spool_dir: Path) -> None:
    made(spool_dir)
    missing = run_pool(spool_dir, "pause", "ghost")
    assert missing.returncode == 1 and "ghost" in missing.stderr and "Traceback" not in missing.stderr
