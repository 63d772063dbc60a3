"""End to end: a real ``pool serve`` on a temp spool, driven by files and the CLI."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import orjson
import pytest
from conftest import Server, drop, job, made, pid_alive, refused, run_pool, state_of, status_doc, wait_until

from pool.client import Spool
from pool.model import JobStatus


@pytest.mark.every_engine
def test_a_dropped_job_runs_and_stores_its_result(spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve()
    drop(spool_dir, "sum.json", job("add", 2, 3, id="sum"))
    wait_until(lambda: state_of(spool_dir, "sum") == "done", what="job 'sum' done")
    doc = status_doc(spool_dir, "sum")
    assert doc is not None
    assert (doc["result"], doc["progress"], doc["attempt"], doc["error"]) == (5, 1.0, 1, None)
    assert doc["started_at"] and doc["finished_at"] and doc["name"] == "sum"
    assert (spool_dir / "logs" / "sum.log").read_text() == "adding 2 and 3\n"
    assert not list((spool_dir / "incoming").iterdir())
    result = run_pool(spool_dir, "status", "--json", check=True)
    assert [d["id"] for d in orjson.loads(result.stdout)] == ["sum"]
    events = [orjson.loads(line) for line in (spool_dir / "events.jsonl").read_bytes().splitlines()]
    assert [(e["from"], e["to"]) for e in events] == [(None, "queued"), ("queued", "running"), ("running", "done")]


@pytest.mark.every_engine
def test_progress_between_zero_and_one_is_visible_while_the_job_runs(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve()
    gate = tmp_path / "gate"
    drop(spool_dir, "half.json", job("halfway", str(gate), id="half"))
    doc = wait_until(lambda: (d := status_doc(spool_dir, "half")) and d["progress"] and d, what="progress")
    assert doc["state"] == "running" and doc["progress"] == 0.3 and doc["message"] == "three of ten"
    table = run_pool(spool_dir, "status", check=True).stdout
    assert "half" in table and "30%" in table and "running" in table
    gate.touch()
    wait_until(lambda: state_of(spool_dir, "half") == "done", what="job done")


@pytest.mark.every_engine
def test_two_workers_run_two_jobs_at_once_and_never_three(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve("--workers", "2")
    gate, markers = tmp_path / "gate", tmp_path / "running"
    markers.mkdir()
    for n in range(5):
        drop(spool_dir, f"h{n}.json", job("hold", str(gate), str(markers), id=f"h{n}"))
    spool = Spool(spool_dir)
    wait_until(lambda: len(spool.statuses("running")) == 2, what="two jobs running")
    wait_until(lambda: len(os.listdir(markers)) == 2, what="two jobs inside their task")
    assert len(spool.statuses("queued")) == 3
    gate.touch()
    seen_running = []

    def all_done() -> bool:
        seen_running.append(len(spool.statuses("running")))
        return len(spool.statuses("done")) == 5

    wait_until(all_done, what="all five jobs done")
    assert max(seen_running) <= 2
    concurrency = [int(n) for n in (tmp_path / "concurrency.log").read_text().split()]
    assert len(concurrency) == 5 and max(concurrency) == 2


@pytest.mark.every_engine
def test_kill_ends_a_running_job_cancelled_and_its_process_is_gone(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve()
    drop(spool_dir, "f.json", job("forever", id="forever"))
    doc = wait_until(lambda: (d := status_doc(spool_dir, "forever")) and d["state"] == "running" and d,
                     what="job running")
    pid = doc["pid"]
    assert pid_alive(pid)
    result = run_pool(spool_dir, "kill", "forever", check=True)
    assert result.stdout.strip() == "forever: cancelled"
    doc = status_doc(spool_dir, "forever")
    assert doc is not None and doc["state"] == "cancelled" and doc["error"]["type"] == "Cancelled"
    wait_until(lambda: not pid_alive(pid), what="the job's process to be gone")
    events = (spool_dir / "events.jsonl").read_text()
    assert "WorkerDied" not in events and '"to":"failed"' not in events


@pytest.mark.every_engine
def test_a_killed_queued_job_never_starts(spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve("--workers", "1")
    gate = tmp_path / "gate"
    drop(spool_dir, "first.json", job("hold", str(gate), id="first"))
    wait_until(lambda: state_of(spool_dir, "first") == "running", what="first running")
    drop(spool_dir, "second.json", job("add", 1, 1, id="second"))
    wait_until(lambda: state_of(spool_dir, "second") == "queued", what="second queued")
    assert run_pool(spool_dir, "kill", "second", check=True).stdout.strip() == "second: cancelled"
    gate.touch()
    drop(spool_dir, "third.json", job("add", 1, 2, id="third"))
    wait_until(lambda: state_of(spool_dir, "third") == "done", what="third done")
    doc = status_doc(spool_dir, "second")
    assert doc is not None and doc["state"] == "cancelled" and doc["started_at"] is None
    assert not (spool_dir / "logs" / "second.log").exists()


@pytest.mark.every_engine
def test_a_failing_task_is_failed_with_type_message_and_traceback(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve()
    drop(spool_dir, "bad.json", job("fail", "the reason", id="bad"))
    wait_until(lambda: state_of(spool_dir, "bad") == "failed", what="job failed")
    doc = status_doc(spool_dir, "bad")
    assert doc is not None
    error = doc["error"]
    assert (error["type"], error["message"]) == ("ValueError", "the reason")
    assert "pooltest_tasks.py" in error["traceback"] and "raise ValueError(message)" in error["traceback"]
    assert "about to fail" in (spool_dir / "logs" / "bad.log").read_text()
    result = run_pool(spool_dir, "wait", "bad")
    assert result.returncode == 1 and "bad: failed" in result.stdout


def test_bad_files_are_rejected_with_the_reason_and_the_manager_keeps_serving(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve()
    drop(spool_dir, "broken.json", '{"task": "pooltest_tasks:add", ')
    drop(spool_dir, "typo.json", job("add", 1, 2, retires=3))
    drop(spool_dir, "stranger.json", {"task": "os:system", "args": ["echo owned"]})
    rejected = spool_dir / "rejected"
    for name, reason in [("broken.json", "not valid JSON"),
                         ("typo.json", "unknown key 'retires' (did you mean 'retries'?)"),
                         ("stranger.json", "not in a served module")]:
        assert reason in refused(spool_dir, name)
        assert (rejected / name).exists()
    assert (rejected / "broken.json").read_text() == '{"task": "pooltest_tasks:add", '
    drop(spool_dir, "after.json", job("add", 1, 2, id="after"))
    wait_until(lambda: state_of(spool_dir, "after") == "done", what="a good job after bad ones")


@pytest.mark.every_engine
def test_a_jsonl_batch_of_fifty_jobs_all_runs(spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve()
    lines = [orjson.dumps(job("add", n, n)) for n in range(50)]
    drop(spool_dir, "batch.jsonl", b"\n".join(lines) + b"\n")
    spool = Spool(spool_dir)
    wait_until(lambda: len(spool.statuses("done")) == 50, what="fifty jobs done")
    assert sorted(s.result for s in spool.statuses()) == sorted(2 * n for n in range(50))
    assert all(s.spec.name == "batch" for s in spool.statuses())


def test_a_second_manager_is_refused_naming_the_first(spool_dir: Path, serve: Callable[..., Server]) -> None:
    first = serve()
    result = run_pool(spool_dir, "serve", "--tasks", "pooltest_tasks")
    assert result.returncode == 1
    assert result.stderr.strip() == f"Error: a manager is already serving {spool_dir} (pid {first.proc.pid})"  # type: ignore[union-attr]


def test_a_reader_never_sees_a_partial_status_while_progress_is_hammered(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve()
    gate = tmp_path / "gate"
    drop(spool_dir, "hot.json", job("hot_progress", str(gate), id="hot"))
    path = spool_dir / "status" / "hot.json"
    wait_until(lambda: state_of(spool_dir, "hot") == "running", what="job running")
    reads, updates, problems = 0, set(), []
    stop = threading.Event()

    def read_forever() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                doc = orjson.loads(path.read_bytes())
                updates.add(doc["updated_at"])
                reads += 1
            except Exception as exc:  # any failure to read a whole document is the bug
                problems.append(repr(exc))

    readers = [threading.Thread(target=read_forever) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        wait_until(lambda: len(updates) >= 10 and reads >= 2000, 60, "many reads across many writes")
    finally:
        stop.set()
        for reader in readers:
            reader.join()
        gate.touch()
    assert problems == []
    wait_until(lambda: state_of(spool_dir, "hot") == "done", what="job done")


def test_a_job_dropped_while_no_manager_runs_is_taken_at_start(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    drop(made(spool_dir), "early.json", job("add", 20, 22, id="early"))
    submitted = Spool(spool_dir).submit("pooltest_tasks:add", 1, 1, id="via-client")
    assert submitted.status().state.value == "queued"
    serve()
    wait_until(lambda: state_of(spool_dir, "early") == "done" and state_of(spool_dir, "via-client") == "done",
               what="both jobs done")
    assert submitted.result() == 2


def test_a_job_claimed_the_moment_its_status_is_asked_is_found(
        spool_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found running the suite under load: `pool submit` asked for the job's status just as
    the manager claimed its file, and was told there was no such job (the claims had been
    listed before the file was looked for under its own name)."""
    spool = Spool(made(spool_dir))
    spool.submit("pooltest_tasks:add", 1, 2, id="caught")
    incoming = spool_dir / "incoming"
    read = Spool._submitted_status

    def claimed_as_read(self: Spool, job_id: str, entry: str | None = None) -> JobStatus:
        if entry in (None, f"{job_id}.json") and (incoming / f"{job_id}.json").exists():
            os.rename(incoming / f"{job_id}.json", incoming / f".claimed~0123456789ab~{job_id}.json")  # as a manager
        return read(self, job_id, entry)

    monkeypatch.setattr(Spool, "_submitted_status", claimed_as_read)
    status = spool.status("caught")
    assert (status.id, status.state.value, status.spec.args) == ("caught", "queued", (1, 2))


@pytest.mark.every_engine
def test_higher_priority_runs_first_and_fifo_within_a_priority(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    order = tmp_path / "order"
    lines = [job("record_order", str(order), id=name, priority=prio)
             for name, prio in [("low-1", 0), ("low-2", 0), ("high", 5), ("low-3", 0), ("mid", 1)]]
    drop(spool_dir, "batch.jsonl", b"\n".join(orjson.dumps(line) for line in lines))
    serve("--workers", "1")
    spool = Spool(spool_dir)
    wait_until(lambda: len(spool.statuses("done")) == 5, what="all done")
    assert order.read_text().split() == ["high", "mid", "low-1", "low-2", "low-3"]


@pytest.mark.every_engine
def test_cli_submit_wait_logs_and_errors(spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve()
    result = run_pool(spool_dir, "submit", "--kw", "flag=true", "--kw", "name=x", "--id", "e1",
                      "pooltest_tasks:echo", "42", "[1, 2]", "text", check=True)
    assert result.stdout.strip() == "e1"
    assert run_pool(spool_dir, "wait", "e1", check=True).stdout.strip() == "e1: done"
    assert status_doc(spool_dir, "e1")["result"] == {  # type: ignore[index]
        "args": [42, [1, 2], "text"], "kwargs": {"flag": True, "name": "x"}}
    run_pool(spool_dir, "submit", "--id", "a1", "pooltest_tasks:add", "1", "2", check=True)
    run_pool(spool_dir, "wait", "a1", check=True)
    assert run_pool(spool_dir, "logs", "a1", check=True).stdout == "adding 1 and 2\n"
    detail = run_pool(spool_dir, "status", "a1", check=True).stdout
    assert "state:     done" in detail and "running -> done" in detail
    for args in (["kill", "nope"], ["wait", "nope"], ["logs", "nope"], ["status", "nope"]):
        result = run_pool(spool_dir, *args)
        assert result.returncode == 1, args
        assert result.stderr.strip() == f"Error: no job 'nope' in {spool_dir}", args
    result = run_pool(spool_dir, "submit", "--id", "../x", "pooltest_tasks:add")
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "'id' must be" in result.stderr
    assert run_pool(spool_dir, "status", "--state", "bogus").returncode == 2
    assert run_pool(spool_dir, "kill", "a1", check=True).stdout.strip() == "a1: already done"


@pytest.mark.every_engine
def test_sigterm_stops_gracefully_and_requeues_what_was_running(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    server = serve("--grace", "0.2", "--kill-grace", "5")
    drop(spool_dir, "f.json", job("forever", id="forever"))
    wait_until(lambda: state_of(spool_dir, "forever") == "running", what="job running")
    pid = status_doc(spool_dir, "forever")["pid"]  # type: ignore[index]
    assert server.stop(signal.SIGTERM) == 0
    doc = status_doc(spool_dir, "forever")
    assert doc is not None and (doc["state"], doc["attempt"], doc["pid"]) == ("queued", 1, None)
    assert not pid_alive(pid)
    second = serve()
    wait_until(lambda: state_of(spool_dir, "forever") == "running", what="job running again")
    assert run_pool(spool_dir, "kill", "forever", check=True).stdout.strip() == "forever: cancelled"
    assert second.proc is not None


def test_a_file_still_being_written_is_waited_for_not_rejected(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve()
    body = orjson.dumps(job("add", 4, 5, id="slow"))
    with open(spool_dir / "incoming" / "slow.json", "wb") as writer:
        writer.write(body[:10])  # a cp or a writer that pauses half way
        writer.flush()
        # Quiet for an hour, by its mtime, far past --settle 0.2: only the open writer holds it back.
        an_hour_ago = time.time() - 3600
        os.utime(writer.fileno(), (an_hour_ago, an_hour_ago))
        # Another file taken in proves the manager has looked at the folder meanwhile.
        drop(spool_dir, "marker.json", job("add", 0, 0, id="marker"))
        wait_until(lambda: state_of(spool_dir, "marker") == "done", what="marker job done")
        assert (spool_dir / "incoming" / "slow.json").exists()
        assert not (spool_dir / "rejected" / "slow.json").exists()
        writer.write(body[10:])
    wait_until(lambda: state_of(spool_dir, "slow") == "done", what="the completed file runs")
    assert status_doc(spool_dir, "slow")["result"] == 9  # type: ignore[index]
    assert not list((spool_dir / "rejected").iterdir())


def test_the_demo_ends_with_every_job_as_expected(tmp_path: Path) -> None:
    result = run_pool(tmp_path / "unused", "demo", "--spool", str(tmp_path / "demo"), "--kill-after", "1",
                      timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 done, 1 failed, 1 cancelled" in result.stdout
    resumed = status_doc(tmp_path / "demo", "resumable")  # its worker killed -9 partway: it went on from there
    assert resumed is not None and resumed["attempt"] == 2 and resumed["result"]["resumed_at"] >= 12


def test_a_job_killed_before_any_manager_took_it_is_cancelled_and_never_runs(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    job_id = Spool(made(spool_dir)).submit("pooltest_tasks:add", 1, 1, id="early-kill").id
    assert run_pool(spool_dir, "kill", job_id, check=True).stdout.strip() == "early-kill: cancelled"
    assert not (spool_dir / "incoming" / "early-kill.json").exists()
    serve()
    drop(spool_dir, "later.json", job("add", 2, 2, id="later"))
    wait_until(lambda: state_of(spool_dir, "later") == "done", what="a later job done")
    doc = status_doc(spool_dir, "early-kill")
    assert doc is not None and (doc["state"], doc["started_at"]) == ("cancelled", None)


def test_killing_a_job_spares_the_job_sent_ahead_to_its_worker(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve("--workers", "1")
    drop(spool_dir, "a.json", job("forever", id="a"))
    wait_until(lambda: state_of(spool_dir, "a") == "running", what="a running")
    drop(spool_dir, "b.json", job("add", 3, 4, id="b"))  # waits in the busy worker's pipe
    wait_until(lambda: state_of(spool_dir, "b") == "queued", what="b queued")
    assert run_pool(spool_dir, "kill", "a", check=True).stdout.strip() == "a: cancelled"
    wait_until(lambda: state_of(spool_dir, "b") == "done", what="b done after all")
    assert status_doc(spool_dir, "b")["result"] == 7  # type: ignore[index]

