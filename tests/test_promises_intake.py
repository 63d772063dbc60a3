"""Regression tests for defects found by attacking pool from the outside: each test names the promise it checks and drives a
real ``pool serve`` with files and the CLI, for the whole class of input, not one sample.

Promises (README, "Guarantees"): a job accepted into the spool is never lost; bad input
never stops the manager and never loses a file; links are never followed and FIFOs never
blocked on; the intake rules (tasks served, --allow-commands, --allow-loader-env, ids)
hold for every way a file gets in; timeouts are enforced while a big batch comes in."""

from __future__ import annotations

import math
import os
import resource
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import (
    TESTS, Server, drop, env_for_tests, events_of, job, pid_alive, refused, run_pool, state_of, status_doc, wait_until)

from pool.client import Spool

ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def alive(server: Server) -> bool:
    return server.proc is not None and server.proc.poll() is None


def in_state(spool_dir: Path, job_id: str, state: str) -> Callable[[], bool]:
    return lambda: state_of(spool_dir, job_id) == state


def gone(path: Path) -> Callable[[], bool]:
    return lambda: not os.path.lexists(path)


def status_names(spool_dir: Path) -> list[str]:
    return [n for n in os.listdir(spool_dir / "status") if n.endswith(".json")]


def reason_of(error_file: Path) -> str:
    return str(orjson.loads(error_file.read_bytes())["reason"])


def run_to_done(spool_dir: Path, job_id: str, timeout: float = 15) -> None:
    """The manager still serves: a job dropped now runs to done."""
    drop(spool_dir, f"{job_id}.json", job("add", 1, 2, id=job_id))
    wait_until(lambda: state_of(spool_dir, job_id) == "done", timeout, f"job {job_id!r} done (the manager serves)")


def write_request(spool_dir: Path, name: str, data: bytes) -> None:
    """A request file written by hand, the safe way (a dot-file renamed into place)."""
    requests = spool_dir / "requests"
    tmp = requests / f".{name}.tmp"
    tmp.write_bytes(data)
    os.rename(tmp, requests / name)


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    assert not pid_alive(child.pid)
    return child.pid


# ---------------------------------------------------------------- 1. appends to a .jsonl

APPEND_ONE_BY_ONE = ("for n in $(seq %d %d); do /bin/echo '{\"task\":\"pooltest_tasks:add\",\"args\":['\"$n\"',0],"
                     "\"id\":\"a'\"$n\"'\"}' >> \"$1\"; done")


def append_one_by_one(batch: Path, first: int, last: int) -> None:
    """One line per append, each from its own process, as a shell loop of `echo >> file`
    does (open, write one line, close; about a millisecond apart)."""
    subprocess.run(["sh", "-c", APPEND_ONE_BY_ONE % (first, last), "sh", str(batch)], check=True, timeout=60)


def assert_every_appended_line_taken_in(spool_dir: Path, server: Server, count: int) -> None:
    incoming = spool_dir / "incoming"
    wait_until(lambda: not os.listdir(incoming) or not alive(server), 30, "incoming/ empty (every append taken in)")
    assert alive(server), f"the manager died (exit {server.proc and server.proc.poll()}):\n{server.output()[-3000:]}"
    expected = {f"a{n}.json" for n in range(count)}
    have = set(status_names(spool_dir))
    assert not expected - have, f"{len(expected - have)} appended lines lost, e.g. {sorted(expected - have)[:5]}"
    assert have == expected
    assert os.listdir(spool_dir / "rejected") == []

    def done() -> int:
        events = spool_dir / "events.jsonl"
        return events.read_bytes().count(b'"to":"done"') if events.exists() else 0

    wait_until(lambda: done() == count, 60, "every appended job done")


def test_every_line_appended_to_a_jsonl_gets_a_status(spool_dir: Path, serve: Callable[..., Server]) -> None:
    """Promise: a job accepted into the spool is never lost. A writer growing
    incoming/batch.jsonl with separate appends (``echo ... >> batch.jsonl``: open, write one
    line, close) loses no line, whether it lands before or after the manager claims the file."""
    server = serve("--workers", "2")
    batch = spool_dir / "incoming" / "batch.jsonl"
    first, singles = 1500, 300
    with open(batch, "ab") as f:  # one big append...
        f.write(b"".join(orjson.dumps(job("add", n, 0, id=f"a{n}")) + b"\n" for n in range(first)))
    append_one_by_one(batch, first, first + singles - 1)  # ...then one line per append
    assert_every_appended_line_taken_in(spool_dir, server, first + singles)


def test_a_writer_appending_line_by_line_never_stops_the_manager(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    """Promise: bad input never stops the manager, and ordinary input even less: 2,000
    `echo ... >> batch.jsonl`, a millisecond apart, each opening the file for writing while
    the manager may be looking at it (whether a writer still has it open), all end as
    jobs, and the manager serves on."""
    server = serve("--workers", "2")
    append_one_by_one(spool_dir / "incoming" / "batch.jsonl", 0, 1999)
    assert_every_appended_line_taken_in(spool_dir, server, 2000)


# ---------------------------------------------------------------- 2. deep nesting

NESTED = {
    # orjson reads it, but cannot write a status nesting it one level deeper
    "meta-300-deep.json": b'{"task":"pooltest_tasks:add","args":[1,2],"meta":{"x":' + b"[" * 300 + b"]" * 300 + b"}}",
    # a long digit run makes pool re-read the file with json.loads, which recurses
    "args-1000-deep-long-number.json": (b'{"task":"pooltest_tasks:add","args":[' + b"[" * 1000 + b"]" * 1000
                                        + b'],"meta":{"n":1234567890123456789}}'),
}


@pytest.mark.parametrize("name", list(NESTED))
def test_deep_nesting_is_rejected_and_neither_the_manager_nor_its_restart_dies(
        spool_dir: Path, serve: Callable[..., Server], name: str) -> None:
    """Promise: bad input (nesting hundreds deep) never stops the manager and never loses
    the file: it is rejected with a reason naming the nesting, whether it arrives while the
    manager serves, lies in incoming/ at start, or is a claim a dead manager left."""
    data = NESTED[name]
    rejected = spool_dir / "rejected"
    server = serve("--workers", "1")
    drop(spool_dir, name, data)
    wait_until(lambda: (rejected / f"{name}.error.json").exists() or not alive(server), 15, f"{name} rejected")
    assert alive(server), f"the manager died on {name}:\n{server.output()[-3000:]}"
    reason = refused(spool_dir, name)
    assert "nested" in reason and "deep" in reason, reason
    assert (rejected / name).read_bytes() == data  # kept, untouched
    run_to_done(spool_dir, "after-drop")
    assert server.stop() == 0

    # The same input waiting at the next start: as a plain file, and as a claim (a manager
    # killed after claiming it) that every start reads again.
    incoming = spool_dir / "incoming"
    drop(spool_dir, f"fresh-{name}", data)
    (incoming / f".claimed~0123456789ab~claimed-{name}").write_bytes(data)
    restarted = serve("--workers", "1")
    for original in (f"fresh-{name}", f"claimed-{name}"):
        error = rejected / f"{original}.error.json"
        wait_until(lambda: error.exists() or not alive(restarted), 15,  # noqa: B023 (used at once)
                   f"{original} rejected after a restart")
        assert alive(restarted), f"the restarted manager died on {original}:\n{restarted.output()[-3000:]}"
        reason = refused(spool_dir, original)
        assert "nested" in reason, reason
        assert (rejected / original).read_bytes() == data
    run_to_done(spool_dir, "after-restart")
    assert not os.listdir(incoming)
    assert alive(restarted)


# ---------------------------------------------------------------- 3. malformed status files

def status_like(**changes: Any) -> bytes:
    doc: dict[str, Any] = {
        "id": "x", "name": "x", "task": "pooltest_tasks:add", "args": [1, 2], "kwargs": {}, "priority": 0,
        "retries": 0, "retry_delay": 1.0, "retry_backoff": 2.0, "timeout": None, "meta": {}, "schema": 1,
        "state": "queued", "created_at": "2026-01-01T00:00:00.000000Z", "updated_at": "2026-01-01T00:00:00.000000Z",
        "attempt": 1, "progress": None, "message": None, "pid": None, "pid_started": None, "started_at": None,
        "finished_at": None, "next_try_at": None, "exit_code": None, "result": None, "error": None,
        "max_attempts": 1, "log": "logs/x.log"}
    doc.update(changes)
    return orjson.dumps(doc)


MALFORMED_STATUS = {
    "a-list": b"[]",
    "an-empty-object": b"{}",
    "null": b"null",
    "truncated": status_like()[:40],
    "attempt-a-word": status_like(attempt="one"),
    "state-unknown": status_like(state="exploded"),
    "created-at-a-number": status_like(created_at=5),
    "created-at-no-date": status_like(created_at="2026-99-99T99:99:99.000000Z"),
    "next-try-no-date": status_like(next_try_at="2026-02-30T00:00:00.000000Z"),
    "args-not-a-list": status_like(args="1, 2"),
    "holds-another-job": status_like(id="y"),
}


@pytest.mark.parametrize("case", list(MALFORMED_STATUS))
def test_a_malformed_status_file_is_set_aside_and_stops_nothing(
        spool_dir: Path, serve: Callable[..., Server], case: str) -> None:
    """Promise: bad input never stops the manager and never loses a file, status/ included
    (a group member's file, a partial restore, another tool): `pool status` shows the rest
    without a traceback, and the manager starts, sets the document aside in rejected/
    (x.status.json, with why) and serves."""
    data = MALFORMED_STATUS[case]
    Spool(spool_dir).dir.create()
    (spool_dir / "status" / "x.json").write_bytes(data)
    write_request(spool_dir, "kill-x", b"{}")  # a kill for it, waiting as the manager starts
    for args in (("status",), ("status", "--json"), ("status", "--state", "queued"), ("status", "--since", "1h"),
                 ("status", "x"), ("wait", "--all", "--timeout", "0")):
        result = run_pool(spool_dir, *args)
        assert result.returncode in (0, 1) and "Traceback" not in result.stderr, (args, result.stderr)
        assert result.returncode == 0 or result.stderr.count("\n") == 1, (args, result.stderr)
    server = serve("--workers", "1")
    run_to_done(spool_dir, "fine")
    kept = spool_dir / "rejected" / "x.status.json"
    assert refused(spool_dir, "x.status.json", 10)
    assert kept.read_bytes() == data
    assert not (spool_dir / "status" / "x.json").exists()
    # The event follows the file set aside (the manager appends its turn's events last).
    wait_until(lambda: [(e["from"], e["to"]) for e in events_of(spool_dir, "x")] == [(None, "set_aside")],
               what="the event of it")
    result = run_pool(spool_dir, "status", "--json")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert [d["id"] for d in orjson.loads(result.stdout)] == ["fine"]
    assert alive(server)


# ---------------------------------------------------------------- 4. requests/

def make_fifo(path: Path, outside: Path) -> None:
    os.mkfifo(path)


def make_devzero_link(path: Path, outside: Path) -> None:
    os.symlink("/dev/zero", path)


def make_link_to_fifo(path: Path, outside: Path) -> None:
    os.mkfifo(outside / "fifo")  # followed, its open would block
    os.symlink(outside / "fifo", path)


def make_directory(path: Path, outside: Path) -> None:
    path.mkdir()


def make_socket(path: Path, outside: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()


NOT_A_REQUEST: dict[str, Callable[[Path, Path], None]] = {
    "kill-x": make_fifo, "kill-zero": make_devzero_link, "kill-link": make_link_to_fifo,
    "kill-dir": make_directory, "kill-sock": make_socket,
}


@pytest.mark.parametrize("name", list(NOT_A_REQUEST))
def test_an_entry_in_requests_that_is_not_a_file_neither_hangs_nor_exhausts_the_manager(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path, name: str) -> None:
    """Promise: a FIFO is never blocked on and a link never followed, in requests/ as in
    incoming/: a FIFO named kill-x, a link to /dev/zero (read, it never ends), a link to a
    FIFO, a folder, a socket: the manager serves on, and the entry is set aside in
    rejected/, untouched, with why (never carried out, never in the way)."""
    server = serve("--workers", "1")
    assert server.proc is not None
    limit = 3 * 1024**3  # reading /dev/zero must end in MemoryError here, not in the machine's OOM killer
    resource.prlimit(server.proc.pid, resource.RLIMIT_AS, (limit, limit))
    outside = tmp_path / "outside"
    outside.mkdir()
    entry = spool_dir / "requests" / name
    NOT_A_REQUEST[name](entry, outside)
    try:
        # (10 s: an entry no file event reports, a folder, is found by the 5 s rescan)
        wait_until(lambda: not os.path.lexists(entry) or not alive(server), 10, f"requests/{name} removed")
        assert alive(server), server.output()[-3000:]
        run_to_done(spool_dir, "after", timeout=10)
        assert not os.path.lexists(entry)
        assert os.path.lexists(spool_dir / "rejected" / f"request.{name}")
        assert (spool_dir / "rejected" / f"request.{name}.error.json").exists()
        if name == "kill-link":
            assert stat.S_ISFIFO(os.lstat(outside / "fifo").st_mode)  # the link's target: untouched
    finally:
        for fifo in (entry, outside / "fifo"):  # let a manager blocked in open() go
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass


BAD_KILL_PAYLOADS = {
    "grace-a-string": b'{"grace": "5s"}',
    "null": b"null",
    "a-list": b"[1, 2]",
    "a-string": b'"5"',
    "grace-true": b'{"grace": true}',
    "grace-negative": b'{"grace": -1}',
    "grace-infinite": b'{"grace": 1e400}',
    "grace-an-object": b'{"grace": {"seconds": 5}}',
    "not-json": b"{grace",
}


@pytest.mark.parametrize("case", list(BAD_KILL_PAYLOADS))
def test_a_kill_request_with_a_bad_payload_still_cancels_and_stops_nothing(
        spool_dir: Path, serve: Callable[..., Server], case: str) -> None:
    """Promise: bad input never stops the manager, requests/ included: a kill request whose
    payload is not {"grace": seconds} is carried out with the default grace, the job ends
    cancelled, and the manager (and its next start) serves on."""
    server = serve("--workers", "1", "--kill-grace", "1")
    drop(spool_dir, "victim.json", job("forever", id="victim"))
    wait_until(lambda: state_of(spool_dir, "victim") == "running", 10, "victim running")
    write_request(spool_dir, "kill-victim", BAD_KILL_PAYLOADS[case])
    wait_until(lambda: state_of(spool_dir, "victim") == "cancelled" or not alive(server), 15, "victim cancelled")
    assert alive(server), server.output()[-3000:]
    doc = status_doc(spool_dir, "victim")
    assert doc is not None and doc["error"]["type"] == "Cancelled"
    wait_until(lambda: not (spool_dir / "requests" / "kill-victim").exists(), 10, "the request removed")
    run_to_done(spool_dir, "after")
    assert server.stop() == 0
    serve("--workers", "1")
    run_to_done(spool_dir, "after-restart")


def test_cancel_with_a_grace_that_is_not_seconds_raises_and_files_nothing(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    """Promise: a mistake is reported to its caller, not filed for the manager to choke on:
    Spool.cancel(id, grace=<not seconds>) raises pool.InvalidArgument (a ValueError; not
    InvalidJobSpec: a grace is no part of a job) and writes no request; the job runs on and
    a good cancel still works."""
    import pool

    serve("--workers", "1", "--kill-grace", "1")
    drop(spool_dir, "victim.json", job("forever", id="victim"))
    wait_until(lambda: state_of(spool_dir, "victim") == "running", 10, "victim running")
    spool = pool.Spool(spool_dir)
    for grace in ("5s", -1, math.nan, math.inf, True, [5], 10**9):
        with pytest.raises(pool.InvalidArgument) as raised:
            spool.cancel("victim", grace=grace)
        assert isinstance(raised.value, ValueError)
        assert os.listdir(spool_dir / "requests") == [], grace
        assert state_of(spool_dir, "victim") == "running"
    spool.cancel("victim", grace=0.5)
    wait_until(lambda: state_of(spool_dir, "victim") == "cancelled", 10, "victim cancelled by a good request")


# ---------------------------------------------------------------- 5. renamed in from outside

@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_file_renamed_in_from_elsewhere_is_taken_in_without_a_restart(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path, suffix: str) -> None:
    """Promise (the job format: "write a job file somewhere else and rename it into
    incoming/"): a file written outside the spool on the same filesystem and renamed in
    (an unpaired move into the watched folder) is taken in and run while the manager runs."""
    serve("--workers", "1")
    outside = tmp_path / "outside"
    outside.mkdir()
    source = outside / f"batch{suffix}"
    source.write_bytes(orjson.dumps(job("add", 1, 1, id="mv1")) + b"\n")
    os.rename(source, spool_dir / "incoming" / f"batch{suffix}")
    wait_until(lambda: state_of(spool_dir, "mv1") == "done", 10, "the renamed-in job done")
    assert not os.listdir(spool_dir / "incoming")


# ---------------------------------------------------------------- 6. a big batch

def test_timeouts_and_kills_are_enforced_while_a_big_batch_is_taken_in(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    """Promise: timeouts are per attempt and enforced on time, and `pool kill` acts, while a
    big .jsonl (100,000 lines) comes in: it is taken in slices and never stalls the
    manager's loop. A 1 s timeout ends its job before the batch is in, and so does a kill
    filed while the batch's statuses are being written; the batch's jobs meanwhile run."""
    count = 100_000
    server = serve("--workers", "2", "--kill-grace", "0.5")
    drop(spool_dir, "timed.json", job("counted", str(tmp_path / "runs"), 60, id="timed", timeout=1))
    drop(spool_dir, "victim.json", job("forever", id="victim"))
    for job_id in ("timed", "victim"):
        wait_until(in_state(spool_dir, job_id, "running"), 10, f"{job_id} running")
    incoming = spool_dir / "incoming"
    line = orjson.dumps(job("add", 1, 2)) + b"\n"
    (incoming / ".big.tmp").write_bytes(line * count)
    os.rename(incoming / ".big.tmp", incoming / "big.jsonl")

    def taken() -> int:
        return len(status_names(spool_dir)) - 2

    wait_until(lambda: state_of(spool_dir, "timed") in ("failed", "done", "cancelled"), 20, "the timed job to end")
    assert taken() < count, "the timeout took effect only once the whole batch was in"
    doc = status_doc(spool_dir, "timed")
    assert doc is not None and doc["state"] == "failed" and doc["error"]["type"] == "Timeout", doc
    # While the batch's statuses are being written: a kill is carried out...
    wait_until(lambda: taken() > 1000, 30, "the batch coming in")
    assert run_pool(spool_dir, "kill", "victim", check=True, timeout=20).stdout.strip() == "victim: cancelled"
    assert taken() < count, "the kill took effect only once the whole batch was in"

    # ...and jobs of the batch are dispatched and run.
    def done() -> int:
        events = spool_dir / "events.jsonl"
        return events.read_bytes().count(b'"to":"done"') if events.exists() else 0

    wait_until(lambda: done() >= 20, 20, "jobs of the batch done")
    assert taken() < count, "the batch's jobs ran only once the whole batch was in"
    assert alive(server)
    assert server.stop() == 0


# ---------------------------------------------------------------- 7. names like a claim

def test_entries_named_like_claims_that_are_not_files_do_not_stop_a_start(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    """Promise: bad input never stops the manager: a folder, a FIFO or a dangling link named
    like a claim (``.claimed~<token>~<name>``, with a token pool makes or not) lies in
    incoming/ at start: the manager starts, serves, and moves each to rejected/ with why."""
    Spool(spool_dir).dir.create()
    incoming = spool_dir / "incoming"
    kinds = {"dir": stat.S_ISDIR, "fifo": stat.S_ISFIFO, "dangling": stat.S_ISLNK}
    made: dict[str, Callable[[int], bool]] = {}
    for token in ("0123456789ab", "abc"):
        for kind, is_kind in kinds.items():
            name = f"{kind}-{token}.json"
            path = incoming / f".claimed~{token}~{name}"
            if kind == "dir":
                path.mkdir()
            elif kind == "fifo":
                os.mkfifo(path)
            else:
                os.symlink(tmp_path / "nowhere.json", path)
            made[name] = is_kind
    server = serve("--workers", "1")
    run_to_done(spool_dir, "after")
    wait_until(lambda: not os.listdir(incoming), 10, "incoming/ emptied")
    rejected = os.listdir(spool_dir / "rejected")
    for name, is_kind in made.items():
        kept = [r for r in rejected if r.endswith(name)]
        assert len(kept) == 1, (name, rejected)
        assert is_kind(os.lstat(spool_dir / "rejected" / kept[0]).st_mode), name
        assert f"{kept[0]}.error.json" in rejected, (name, rejected)
    assert alive(server)


def test_a_link_named_like_a_claim_is_never_followed(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    """Promise: a symlink is never followed (its target neither read nor moved), even under
    a claim's name: the job its target holds never runs, and the target is untouched."""
    Spool(spool_dir).dir.create()
    runs = tmp_path / "runs"
    target = tmp_path / "outside.json"
    content = orjson.dumps(job("counted", str(runs), id="via-link"))
    target.write_bytes(content)
    link = spool_dir / "incoming" / ".claimed~0123456789ab~y.json"
    os.symlink(target, link)
    serve("--workers", "1")
    run_to_done(spool_dir, "after")
    wait_until(lambda: not os.path.lexists(link), 10, "the link moved out of incoming/")
    assert state_of(spool_dir, "via-link") is None
    assert not runs.exists()
    assert target.read_bytes() == content and not target.is_symlink()
    assert [n for n in os.listdir(spool_dir / "rejected") if os.path.islink(spool_dir / "rejected" / n)] != []


def test_claims_obey_the_intake_rules(spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    """Promise (who may get a job run): the intake rules hold for a file found as a claim
    too: a command job setting LD_PRELOAD is refused without --allow-loader-env, a task of
    a module the manager does not serve is refused, and a claim's token never becomes an
    id pool would not give (".hidden": a status no listing shows)."""
    Spool(spool_dir).dir.create()
    incoming = spool_dir / "incoming"
    ran = tmp_path / "ran"
    claims = {
        ".claimed~0123456789ab~ldp.json": {"command": ["sh", "-c", f"echo $LD_PRELOAD > {ran}-ldp"],
                                           "env": {"LD_PRELOAD": "/nonexistent/evil.so"}, "id": "ldp"},
        ".claimed~0123456789ac~other.json": {"task": "os:system", "args": [f"touch {ran}-other"], "id": "other"},
        ".claimed~.hidden~z.json": job("record_order", f"{ran}-hidden"),
    }
    for entry, spec in claims.items():
        (incoming / entry).write_bytes(orjson.dumps(spec))
    serve("--workers", "1", "--allow-commands")
    run_to_done(spool_dir, "after")
    wait_until(lambda: not os.listdir(incoming), 10, "incoming/ emptied")
    for job_id in ("ldp", "other"):
        assert state_of(spool_dir, job_id) is None, job_id
    assert "--allow-loader-env" in reason_of(spool_dir / "rejected" / "ldp.json.error.json")
    assert "not in a served module" in reason_of(spool_dir / "rejected" / "other.json.error.json")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("ran-")], "a refused claim ran"
    assert not (spool_dir / "status" / ".hidden.json").exists()
    for name in status_names(spool_dir):  # every status is one a listing shows
        assert not name.startswith(".") and set(name[:-5]) <= ID_CHARS, name
    listed = [d["id"] for d in orjson.loads(run_pool(spool_dir, "status", "--json", check=True).stdout)]
    assert sorted(listed) == sorted(n[:-5] for n in status_names(spool_dir))


# ---------------------------------------------------------------- 8. left behind

def test_a_rejected_file_is_never_overwritten_by_a_later_reason(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    """Promise: bad input never loses a file: a rejected file named report.json.error.json
    survives the rejection of a later report.json (and of another after it)."""
    serve("--workers", "1")
    rejected = spool_dir / "rejected"
    inputs = [("report.json.error.json", b"ORIGINAL CONTENT THE USER WANTS BACK"),
              ("report.json", b"{not json"), ("report.json", b"[1, 2]")]

    def holding(data: bytes) -> list[str]:
        """The rejected files that hold ``data`` (not the temp files the manager writes
        their reasons through: one listed may be renamed away before it is read)."""
        found = []
        for name in os.listdir(rejected):
            try:
                if not name.startswith(".") and (rejected / name).read_bytes() == data:
                    found.append(name)
            except FileNotFoundError:
                continue
        return found

    for name, data in inputs:
        drop(spool_dir, name, data)
        wait_until(lambda: not os.listdir(spool_dir / "incoming") and holding(data), 10,  # noqa: B023 (used at once)
                   f"{name} rejected")
    for name, data in inputs:
        kept = holding(data)
        assert len(kept) == 1, (name, data, os.listdir(rejected))
        error = orjson.loads((rejected / f"{kept[0]}.error.json").read_bytes())
        assert error["file"] == name and error["reason"]
    assert len(os.listdir(rejected)) == 2 * len(inputs)


def test_requests_for_unknown_ids_leave_no_lock_files(spool_dir: Path, serve: Callable[..., Server]) -> None:
    """Promise: a request for a job the spool does not have changes nothing in the spool:
    no status/<id>.lock appears (nor status/.lock for `kill-` with no id)."""
    serve("--workers", "1", "--kill-grace", "1")
    for name in ("kill-elsewhere-1", "retry-elsewhere-2", "kill-", "retry-"):
        write_request(spool_dir, name, b"{}")
    # Carried out in order: once a later kill has been, these have been looked at too.
    drop(spool_dir, "sync.json", job("forever", id="sync"))
    wait_until(lambda: state_of(spool_dir, "sync") == "running", 10, "sync running")
    assert run_pool(spool_dir, "kill", "sync", check=True).stdout.strip() == "sync: cancelled"
    for name in ("retry-elsewhere-2", "kill-", "retry-"):
        wait_until(gone(spool_dir / "requests" / name), 10, f"requests/{name} removed")
    locks = sorted(n for n in os.listdir(spool_dir / "status") if n.endswith(".lock"))
    assert locks == ["sync.lock"]


def test_a_dead_writers_status_temp_file_is_removed_at_start(spool_dir: Path, serve: Callable[..., Server]) -> None:
    """Promise: a kill -9 leaves nothing behind for good: a temp file of pool's naming
    (``.<name>.<pid>.<8 hex>.tmp``) whose writer is dead is removed when a manager starts,
    however fresh; one whose writer lives is left to it."""
    Spool(spool_dir).dir.create()
    pid = dead_pid()
    stale = [spool_dir / "status" / f".s7.json.{pid}.0123abcd.tmp",
             spool_dir / "status" / f".s8.json.{pid}.89abcdef.tmp",
             spool_dir / f".manager.pid.{pid}.00ff00ff.tmp"]
    for path in stale:
        path.write_bytes(b'{"id":"s7","sta')  # half a document
    live = spool_dir / "status" / f".s9.json.{os.getpid()}.deadbeef.tmp"
    live.write_bytes(b'{"id":"s9"')
    serve("--workers", "1")
    for path in stale:
        wait_until(gone(path), 10, f"{path.name} removed")
    assert live.exists()
    run_to_done(spool_dir, "after")


# ---------------------------------------------------------------- 9. listing by a document's own fields

def test_status_filters_and_orders_by_each_documents_own_fields(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    """Promise (`pool status`): --state S lists the jobs in state S, newest first by each
    document's own created_at; a job's free-form meta holding "state" or "created_at"
    changes neither."""
    serve("--workers", "1")
    gate = tmp_path / "gate"
    run_to_done(spool_dir, "first")
    drop(spool_dir, "blocker.json", job("hold", str(gate), id="blocker"))
    wait_until(lambda: state_of(spool_dir, "blocker") == "running", 10, "blocker running")
    drop(spool_dir, "fake.json", job("add", 1, 1, id="fake",
                                     meta={"state": "done", "created_at": "2999-01-01T00:00:00.000000Z"}))
    wait_until(lambda: state_of(spool_dir, "fake") == "queued", 10, "fake queued")
    drop(spool_dir, "last.json", job("add", 2, 2, id="last"))
    wait_until(lambda: state_of(spool_dir, "last") == "queued", 10, "last queued")

    def listed(*args: str) -> list[str]:
        return [d["id"] for d in orjson.loads(run_pool(spool_dir, "status", "--json", *args, check=True).stdout)]

    assert listed("--state", "done") == ["first"]
    assert listed("--state", "queued") == ["last", "fake"]
    docs = orjson.loads(run_pool(spool_dir, "status", "--json", check=True).stdout)
    assert [d["id"] for d in docs] == ["last", "fake", "blocker", "first"]
    assert [d["created_at"] for d in docs] == sorted((d["created_at"] for d in docs), reverse=True)
    table = run_pool(spool_dir, "status", check=True).stdout.splitlines()
    assert [row.split()[0] for row in table[1:5]] == ["last", "fake", "blocker", "first"]
    gate.touch()
    for job_id in ("blocker", "fake", "last"):
        wait_until(in_state(spool_dir, job_id, "done"), 10, f"{job_id} done")


# ---------------------------------------------------------------- 10. events.jsonl is bounded

def test_the_event_log_rotates_at_its_limit_and_reads_across_both(tmp_path: Path) -> None:
    """Promise: events.jsonl is bounded: past max_bytes it becomes events.1.jsonl and a new
    log starts, so neither grows past the limit by more than one flush; reading returns
    the events of both, oldest first. (`pool serve` has no option for the limit: the
    Python API is tested here, and a manager started with one below.)"""
    from pool.events import NAME, PREVIOUS, EventLog
    from pool.safeio import Folder, Owners

    limit = 2000
    folder = Folder(tmp_path)
    events = EventLog(folder, lambda: 0o600, max_bytes=limit)
    longest = 0
    for n in range(400):
        event = {"time": "2026-01-01T00:00:00.000000Z", "id": f"e{n}", "from": "queued", "to": "running",
                 "attempt": 1, "reason": "x" * (n % 40)}
        longest = max(longest, len(orjson.dumps(event)) + 1)
        events.append(event)
        assert not (tmp_path / NAME).exists() or (tmp_path / NAME).stat().st_size <= limit
    assert (tmp_path / PREVIOUS).exists()
    assert (tmp_path / PREVIOUS).stat().st_size <= limit + longest
    read = events.read(Owners(os.geteuid()))
    lines = sum(len((tmp_path / name).read_bytes().splitlines())
                for name in (PREVIOUS, NAME) if (tmp_path / name).exists())
    assert len(read) == lines and lines > 0
    numbers = [int(e["id"][1:]) for e in read]
    assert numbers == list(range(400 - len(read), 400))  # the newest, in order, across both files
    assert len(read) > len((tmp_path / NAME).read_bytes().splitlines())  # some came from events.1.jsonl
    assert events.read(Owners(os.geteuid()), job_id="e399") == [read[-1]]

    buffered = EventLog(Folder(tmp_path), lambda: 0o600, buffered=True, max_bytes=limit)
    for n in range(100):
        buffered.append({"id": f"b{n}", "to": "done"})
    buffered.flush()  # one flush of ~2 KB: rotated at once, never appended to again
    assert not (tmp_path / NAME).exists() or (tmp_path / NAME).stat().st_size <= limit
    assert [e["id"] for e in buffered.read(Owners(os.geteuid()))][-1] == "b99"


def test_a_manager_with_a_small_event_limit_keeps_events_bounded(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    """Promise: events.jsonl is bounded: a manager started with a small limit
    (--events-max-bytes) rotates it while it serves, and the timeline of a job is still
    shown."""
    limit = 4096
    server = serve("--workers", "1", "--events-max-bytes", str(limit))
    proc = server.proc
    assert proc is not None
    count = 60
    for n in range(count):
        drop(spool_dir, f"e{n}.json", job("add", n, 0, id=f"e{n}"))
    spool = Spool(spool_dir)
    wait_until(lambda: len(spool.statuses("done")) == count or proc.poll() is not None, 30, "every job done")
    assert proc.poll() is None
    current, previous = spool_dir / "events.jsonl", spool_dir / "events.1.jsonl"
    assert previous.exists(), "never rotated"
    assert not current.exists() or current.stat().st_size <= limit
    assert previous.stat().st_size <= limit + 64 * 1024  # one loop turn's flush at most
    detail = run_pool(spool_dir, "status", f"e{count - 1}", check=True).stdout
    assert "timeline:" in detail and "-> done" in detail, detail


def test_an_append_cut_short_by_a_full_disk_leaves_no_torn_line(tmp_path: Path) -> None:
    """A full disk tore a line of events.jsonl (one write, its short count ignored) and the
    next append was glued to it. A write cut short is taken back whole. A file size limit
    stands for the full disk here (RLIMIT_FSIZE cuts a write short at the limit, then
    refuses the next), in a process of its own."""
    script = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from pool.events import EventLog\n"
        "from pool.safeio import Folder\n"
        "folder = Path(sys.argv[1])\n"
        "log = EventLog(Folder(folder), lambda: 0o600)\n"
        "log.append({'id': 'first', 'n': 1})\n"
        "size = (folder / 'events.jsonl').stat().st_size\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (size + 10, resource.RLIM_INFINITY))\n"
        "log.append({'id': 'cut', 'reason': 'x' * 100})\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
        "log.append({'id': 'after', 'n': 3})\n")
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, env=env_for_tests(), timeout=60)
    lines = (tmp_path / "events.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b""  # it ends with a whole line
    assert [orjson.loads(line)["id"] for line in lines[:-1]] == ["first", "after"]


def test_a_lease_on_a_dropped_file_or_a_request_stalls_nothing(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    """A member took a write lease (fcntl F_SETLEASE) on a file she dropped: the manager's
    non-blocking open failed with EWOULDBLOCK, which intake took for a full disk: nothing
    was taken in or started for ~49 s, and with the lease taken again after each break, 0
    of 20 jobs started in 58 s; on a request, root's `pool kill` timed out with the job
    still running. A held file is that file's trouble: the rest goes on."""
    Spool(spool_dir).dir.create()
    held_job = spool_dir / "incoming" / "aaa-held.json"
    held_job.write_bytes(orjson.dumps(job("add", 1, 1, id="held")))
    held_request = spool_dir / "requests" / "kill-aaaa"
    held_request.write_bytes(b"{}")
    holder = subprocess.Popen([sys.executable, str(TESTS / "lease_holder.py"), str(held_job), str(held_request)],
                              stdout=subprocess.PIPE, text=True, env=env_for_tests())
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        serve("--workers", "2")
        for n in range(20):
            drop(spool_dir, f"j{n}.json", job("add", n, 1, id=f"j{n}"))
        wait_until(lambda: all(state_of(spool_dir, f"j{n}") == "done" for n in range(20)), 20,
                   "the 20 other jobs done while two files are held")
        drop(spool_dir, "victim.json", job("forever", id="victim"))
        wait_until(lambda: state_of(spool_dir, "victim") == "running", 20, "the victim running")
        assert run_pool(spool_dir, "kill", "victim", timeout=20, check=True).stdout.strip() == "victim: cancelled"
        assert held_job.exists() and held_request.exists()  # not rejected, not lost: looked at again later
    finally:
        holder.kill()
        holder.wait()


def test_thousands_of_files_kept_open_for_writing_keep_no_job_out(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    """About 3,000 files kept open for writing, named to sort first, kept every later job
    out for 30 s with the manager at 100% of a core: each turn's walk began at the first
    name again and spent its slice on them. A file known to be still written is skipped
    until its close or a later look, and each walk goes on where the last one stopped."""
    serve("--workers", "2")
    incoming = spool_dir / "incoming"
    held = []
    try:
        for n in range(3000):
            held.append(open(incoming / f"0000-open-{n:04d}.json", "wb"))  # noqa: SIM115 (kept open on purpose)
        for n in range(5):
            drop(spool_dir, f"zz-{n}.json", job("add", n, 1, id=f"zz{n}"))
        wait_until(lambda: all(state_of(spool_dir, f"zz{n}") == "done" for n in range(5)), 20,
                   "the jobs dropped behind 3,000 files still open")
        assert not list((spool_dir / "rejected").iterdir())  # a file still written is never refused for it
    finally:
        for f in held:
            f.close()
