"""Jobs that wait for their time (`at`, `delay`; `pool submit --at/--in`): waiting, shown
as such, cancelled by `pool kill`, kept across a manager killed, run at their time."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
from conftest import Server, drop, job, run_pool, state_of, status_doc, wait_until

from pool.client import Spool
from pool.model import parse_time


def waits_until(spool_dir: Path, job_id: str) -> datetime:
    """Once the manager took the job in: the end of its wait."""
    doc = wait_until(lambda: status_doc(spool_dir, job_id), what=f"{job_id} taken in")
    assert doc["state"] == "waiting", doc
    return parse_time(doc["waits"]["until"])


def test_a_job_submitted_to_start_later_waits_shown_as_such_then_runs_at_its_time(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve()
    job_id = run_pool(spool_dir, "submit", "--in", "3s", "pooltest_tasks:add", "1", "2", check=True).stdout.strip()
    until = waits_until(spool_dir, job_id)
    listed = run_pool(spool_dir, "status", "--state", "waiting", check=True).stdout
    assert job_id in listed and "waiting" in listed and f"waits until {until.astimezone():%H:%M:%S}" in listed
    shown = orjson.loads(run_pool(spool_dir, "status", "--json", check=True).stdout)
    assert [d["waits"] for d in shown if d["id"] == job_id] == [{"until": until.isoformat().replace("+00:00", "Z")}]
    assert "waits:     until" in run_pool(spool_dir, "status", job_id, check=True).stdout
    wait_until(lambda: state_of(spool_dir, job_id) == "done", what="done after its wait")
    doc = status_doc(spool_dir, job_id)
    assert doc is not None and parse_time(doc["started_at"]) >= until and doc["waits"] is None
    events = [(e["from"], e["to"]) for e in map(orjson.loads, (spool_dir / "events.jsonl").read_bytes().splitlines())
              if e["id"] == job_id]
    assert events == [(None, "waiting"), ("waiting", "queued"), ("queued", "running"), ("running", "done")]


def test_a_waiting_job_is_cancelled_by_kill_and_never_starts(spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve()
    job_id = run_pool(spool_dir, "submit", "--in", "1h", "pooltest_tasks:add", "1", "2", check=True).stdout.strip()
    waits_until(spool_dir, job_id)
    run_pool(spool_dir, "kill", job_id, check=True)
    doc = status_doc(spool_dir, job_id)
    assert doc is not None and (doc["state"], doc["started_at"], doc["waits"]) == ("cancelled", None, None)


def test_a_waiting_job_outlives_a_killed_manager_and_runs_at_its_time_once(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    manager = serve()
    runs = tmp_path / "runs"
    at = (datetime.now(timezone.utc) + timedelta(seconds=3)).isoformat()
    drop(spool_dir, "later.json", job("counted", str(runs), id="later", at=at))
    until = waits_until(spool_dir, "later")
    os.kill(manager.pid, signal.SIGKILL)
    manager.proc.wait(timeout=30)  # type: ignore[union-attr]
    serve()
    wait_until(lambda: state_of(spool_dir, "later") == "done", what="done under the next manager")
    doc = status_doc(spool_dir, "later")
    assert doc is not None and parse_time(doc["started_at"]) >= until
    assert runs.read_text().split() == ["later"]


def test_the_python_client_takes_a_datetime_or_a_timedelta(spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve()
    spool = Spool(spool_dir)
    at = datetime.now() + timedelta(hours=2)  # no offset: local time, as in a job file
    by_time = spool.submit("pooltest_tasks:add", 1, 2, at=at)
    by_delay = spool.submit("pooltest_tasks:add", 1, 2, delay=timedelta(minutes=90))
    assert abs((waits_until(spool_dir, by_time.id) - at.astimezone()).total_seconds()) < 0.001
    waits_until(spool_dir, by_delay.id)
    due = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    assert spool.submit("pooltest_tasks:add", 1, 2, at=due).wait(timeout=60).state.value == "done"  # its time passed


def test_bad_times_are_said_in_one_line(spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve()
    negative = run_pool(spool_dir, "submit", "--in", "-5m", "pooltest_tasks:add", "1", "2")
    assert negative.returncode == 1 and "'delay' must be seconds, or a duration like 90s" in negative.stderr
    far = run_pool(spool_dir, "submit", "--at", "2126-01-01T00:00", "pooltest_tasks:add", "1", "2")
    assert far.returncode == 1 and "to a year from now" in far.stderr and len(far.stderr.splitlines()) == 1
    clock = run_pool(spool_dir, "submit", "--at", "25:00", "pooltest_tasks:add", "1", "2")
    assert clock.returncode == 2 and "'25:00' is not a time of day" in clock.stderr
    inline = run_pool(spool_dir, "run", "--in", "5m", "pooltest_tasks:add", "1", "2")
    assert inline.returncode == 2 and "No such option '--in'" in inline.stderr  # pool run starts at once
