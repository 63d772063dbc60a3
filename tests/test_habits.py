"""What people coming from pueue and task-spooler expect, driven from the shell: wait
for everything, run a job again, forget a job, type a short id, the retry and meta
options, prune the central log, keep a job's log to a size, run pool at boot."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from conftest import (
    POOL,
    TESTS,
    Server,
    drop,
    env_for_tests,
    events_of,
    made,
    run_pool,
    state_of,
    status_doc,
    wait_until,
)
from pool.cli.service import systemd_quote

from pool import joblog
from pool.client import Spool
from pool.events import EventLog
from pool.safeio import Folder, Owners

FINAL = ("done", "failed", "cancelled")


def hold(job_id: str, gate: Path, **keys: object) -> dict[str, object]:
    return {"task": "pooltest_tasks:hold", "args": [str(gate)], "id": job_id, **keys}


# ---------------------------------------------------------------- pool wait --all

def test_wait_all_waits_for_every_job_not_yet_ended_and_says_how_they_ended(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve("--workers", "2")
    gate = tmp_path / "gate"
    drop(spool_dir, "a.json", hold("a", gate))
    drop(spool_dir, "b.json", {"task": "pooltest_tasks:fail", "args": ["no"], "id": "b"})
    wait_until(lambda: state_of(spool_dir, "a") == "running" and state_of(spool_dir, "b") == "failed",
               what="a running, b failed")
    drop(spool_dir, "c.json", hold("c", gate))
    wait_until(lambda: state_of(spool_dir, "c"), what="c taken in")
    waiting = subprocess.Popen([*POOL, "--spool", str(spool_dir), "wait", "--all"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env_for_tests())
    assert waiting.stderr is not None
    assert waiting.stderr.readline() == "waiting for 2 job(s): a, c\n"  # b had ended: not among them
    gate.touch()
    out, err = waiting.communicate(timeout=60)
    # b had failed before: not waited for, so it does not make the wait fail.
    assert waiting.returncode == 0, err
    assert "a: done" in out and "c: done" in out and "b:" not in out
    nothing = run_pool(spool_dir, "wait", "--all", check=True)
    assert nothing.stdout == "no job is queued or running\n"
    both = run_pool(spool_dir, "wait", "--all", "a")
    assert both.returncode == 2 and "give job ids, or --all" in both.stderr


# ---------------------------------------------------------------- pool retry / restart of a done job: test_faults

def test_retry_of_a_job_that_has_not_ended_is_refused_in_one_line(spool_dir: Path, tmp_path: Path) -> None:
    made(spool_dir)
    run_pool(spool_dir, "submit", "--id", "q", "pooltest_tasks:hold", str(tmp_path / "gate"), check=True)
    result = run_pool(spool_dir, "restart", "q")
    assert (result.returncode, result.stderr) == (
        1, "Error: job 'q' is queued; only a job that has ended can run again\n")


# ---------------------------------------------------------------- pool remove

def test_remove_forgets_an_ended_job_and_a_queued_one_but_not_a_running_one(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    made(spool_dir)
    run_pool(spool_dir, "submit", "--id", "waiting", "pooltest_tasks:hold", str(gate), check=True)  # in incoming/
    run_pool(spool_dir, "remove", "waiting", check=True)
    assert run_pool(spool_dir, "status", "waiting").returncode == 1
    assert not list((spool_dir / "incoming").glob("*.json"))
    serve("--workers", "1")
    run_pool(spool_dir, "submit", "--id", "ended", "pooltest_tasks:add", "1", "2", check=True)
    wait_until(lambda: state_of(spool_dir, "ended") == "done", what="ended done")
    drop(spool_dir, "busy.json", hold("busy", gate))
    drop(spool_dir, "queued.json", hold("queued", gate))
    wait_until(lambda: state_of(spool_dir, "busy") == "running" and state_of(spool_dir, "queued") == "queued",
               what="one running, one queued behind it")
    refused = run_pool(spool_dir, "remove", "queued", "busy")
    assert (refused.returncode, refused.stderr) == (1, "Error: job 'busy' is running; stop it first: pool kill busy\n")
    assert state_of(spool_dir, "queued") == "queued"  # nothing is touched when one is refused
    removed = run_pool(spool_dir, "remove", "ended", "queued", check=True)
    assert removed.stdout == "ended: removed\nqueued: removed\n"
    for job_id, was in (("ended", "done"), ("queued", "cancelled")):
        assert not (spool_dir / "status" / f"{job_id}.json").exists()
        assert not (spool_dir / "logs" / f"{job_id}.log").exists()
        assert [(e["from"], e["to"]) for e in events_of(spool_dir, job_id)][-1] == (was, "removed")
    gate.touch()
    wait_until(lambda: state_of(spool_dir, "busy") == "done", what="busy done")
    assert status_doc(spool_dir, "queued") is None  # removed before it ran, and never ran


# ---------------------------------------------------------------- unique id prefixes

def test_a_unique_start_of_an_id_is_taken_wherever_an_id_is(spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve()
    for job_id in ("render-17", "render-18", "upload"):
        run_pool(spool_dir, "submit", "--id", job_id, "pooltest_tasks:add", "1", "2", check=True)
    run_pool(spool_dir, "wait", "upl", "render-17", "-q", check=True)
    assert run_pool(spool_dir, "result", "up", check=True).stdout == "3\n"
    assert "adding 1 and 2" in run_pool(spool_dir, "logs", "render-17", check=True).stdout
    assert "id:        upload" in run_pool(spool_dir, "status", "u", check=True).stdout
    ambiguous = run_pool(spool_dir, "kill", "render")
    assert (ambiguous.returncode, ambiguous.stderr) == (
        1, "Error: 'render' is the start of 2 job ids (render-17, render-18); give more of it\n")
    assert run_pool(spool_dir, "retry", "render-18", check=True).stdout.startswith("render-18: ")


# ---------------------------------------------------------------- retry timing and meta from the command line

def test_retry_delay_backoff_and_meta_are_options(spool_dir: Path) -> None:
    made(spool_dir)
    run_pool(spool_dir, "submit", "--id", "m", "--retries", "2", "--retry-delay", "0.5", "--retry-backoff", "3",
             "--meta", "team=ml", "--meta", "batch=7", "pooltest_tasks:add", "1", "2", check=True)
    status = Spool(spool_dir).status("m")
    assert (status.spec.retry_delay, status.spec.retry_backoff, status.spec.meta) == (
        0.5, 3.0, {"team": "ml", "batch": 7})
    bad = run_pool(spool_dir, "submit", "--retry-backoff", "0.5", "pooltest_tasks:add", "1", "2")
    assert bad.returncode == 2 and "--retry-backoff" in bad.stderr
    unshaped = run_pool(spool_dir, "submit", "--meta", "team", "pooltest_tasks:add", "1", "2")
    assert unshaped.returncode == 2 and "expected KEY=VALUE" in unshaped.stderr


# ---------------------------------------------------------------- pool prune trims events.jsonl

def event(time: str, job_id: str) -> bytes:
    return orjson.dumps({"time": time, "id": job_id, "from": None, "to": "queued", "attempt": 1,
                         "reason": "accepted"}) + b"\n"


def test_prune_trims_the_events_older_than_it_was_told_but_not_of_a_job_still_on(
        spool_dir: Path, tmp_path: Path) -> None:
    made(spool_dir)
    run_pool(spool_dir, "submit", "--id", "on", "pooltest_tasks:hold", str(tmp_path / "gate"), check=True)
    old, new = "2020-01-01T00:00:00.000000Z", "2999-01-01T00:00:00.000000Z"
    (spool_dir / "events.1.jsonl").write_bytes(event(old, "a") + event(new, "b"))
    (spool_dir / "events.jsonl").write_bytes(event(old, "c") + b"not an event\n" + event(new, "d") + event(old, "on"))
    dry = run_pool(spool_dir, "prune", "--older-than", "30d", "--dry-run", check=True)
    assert "would remove 2 line(s) of events.jsonl" in dry.stdout
    assert b'"a"' in (spool_dir / "events.1.jsonl").read_bytes()
    run_pool(spool_dir, "prune", "--older-than", "30d", check=True)
    assert (spool_dir / "events.1.jsonl").read_bytes() == event(new, "b")
    assert (spool_dir / "events.jsonl").read_bytes() == b"not an event\n" + event(new, "d") + event(old, "on")
    # Just after a rotation there is only the log before: it is trimmed all the same.
    (spool_dir / "events.jsonl").unlink()
    (spool_dir / "events.1.jsonl").write_bytes(event(old, "e") + event(new, "f"))
    run_pool(spool_dir, "prune", "--older-than", "30d", check=True)
    assert (spool_dir / "events.1.jsonl").read_bytes() == event(new, "f")


OLD, NEW = "2020-01-01T00:00:00.000000Z", "2999-01-01T00:00:00.000000Z"
APPENDS = 400


def append_events(spool_path: str, writer: int, max_bytes: int | None, keep: bool) -> None:
    """``keep``: as a manager while jobs run, its lines buffered, the log kept open from
    one flush to the next (trimmed and rotated by others meanwhile)."""
    log = EventLog(Folder(Path(spool_path)), lambda: 0o600, buffered=keep, max_bytes=max_bytes)  # rotating
    for n in range(APPENDS):
        log.append({"time": NEW, "id": f"w{writer}-{n}"})
        log.append({"time": OLD, "id": "old"})
        log.flush(keep=keep)
    while log.lines:
        log.flush(patience=5.0)


@pytest.mark.parametrize("max_bytes", [None, 16384])
@pytest.mark.parametrize("keep", [False, True])
def test_no_event_is_lost_to_a_trim_running_while_others_append_and_rotate(
        spool_dir: Path, max_bytes: int | None, keep: bool) -> None:
    spool = Spool(spool_dir)
    spool.dir.create()
    # spawn, not fork: pytest-xdist's worker has threads, and a fork of a threaded process
    # may deadlock (Python 3.12+ warns)
    spawn = multiprocessing.get_context("spawn")
    writers = [spawn.Process(target=append_events, args=(str(spool_dir), w, max_bytes, keep)) for w in range(3)]
    for writer in writers:
        writer.start()
    trims = 0
    while any(w.is_alive() for w in writers) or trims < 3:
        spool.dir.events.trim(Owners(os.geteuid()), "2500-01-01T00:00:00.000000Z")
        trims += 1
    for writer in writers:
        writer.join()
        assert writer.exitcode == 0
    spool.dir.events.trim(Owners(os.geteuid()), "2500-01-01T00:00:00.000000Z")
    events = spool.events()
    assert events and all(e["time"] == NEW for e in events)
    for writer in range(3):
        numbers = sorted(int(e["id"].split("-")[1]) for e in events if e["id"].startswith(f"w{writer}-"))
        if max_bytes is None:
            assert numbers == list(range(APPENDS)), f"writer {writer} lost a line"
        elif numbers:  # a rotation drops the oldest log whole: what is left of a writer is its last lines
            assert numbers == list(range(numbers[0], APPENDS)), f"writer {writer} lost a line"


def test_a_log_kept_open_is_let_go_once_rotated_or_trimmed_by_another_writer(spool_dir: Path) -> None:
    """A manager keeps events.jsonl open while jobs run: a line it appends after another
    process rotated or trimmed the log goes to the log under that name, never to the
    file it held."""
    spool = Spool(spool_dir)
    spool.dir.create()
    kept = EventLog(Folder(spool_dir), lambda: 0o600, buffered=True)
    kept.append({"time": NEW, "id": "first"})
    kept.flush(keep=True)
    assert kept.kept is not None
    other = EventLog(Folder(spool_dir), lambda: 0o600, max_bytes=1)  # every append rotates
    other.append({"time": NEW, "id": "rotating"})
    kept.append({"time": NEW, "id": "after-the-rotation"})
    kept.flush(keep=True)
    assert b"after-the-rotation" in (spool_dir / "events.jsonl").read_bytes()
    spool.dir.events.trim(Owners(os.geteuid()), OLD)  # written anew: the kept file has no name left
    kept.append({"time": NEW, "id": "after-the-trim"})
    kept.flush()
    assert kept.kept is None  # let go: no descriptor left open for writing
    assert [e["id"] for e in spool.events()][-2:] == ["after-the-rotation", "after-the-trim"]


def test_a_rotation_right_after_a_trim_replaced_the_log_keeps_its_lines(
        spool_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer appends (and so rotates) the moment a trim has written one of the logs
    anew, whenever the current log is not held: what it rotates must not be overwritten
    by the trim's copy of the previous log."""
    spool = Spool(spool_dir)
    spool.dir.create()
    (spool_dir / "events.1.jsonl").write_bytes(event(OLD, "gone-1") + event(NEW, "kept-1"))
    (spool_dir / "events.jsonl").write_bytes(event(OLD, "gone-2") + event(NEW, "kept-2"))
    writer = EventLog(Folder(spool_dir), lambda: 0o600, max_bytes=64)  # every append rotates
    trimmer = spool.dir.events
    write_atomic = trimmer.folder.write_atomic

    def current_is_free() -> bool:
        try:
            fd = os.open(spool_dir / "events.jsonl", os.O_RDONLY)
        except FileNotFoundError:
            return True  # just rotated away: the next writer makes a new one
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    def write_then_a_writer_comes(name: str, data: bytes, mode: int = 0o600) -> None:
        write_atomic(name, data, mode)
        if current_is_free():
            writer.append({"time": NEW, "id": f"after-{name}"})

    monkeypatch.setattr(trimmer.folder, "write_atomic", write_then_a_writer_comes)
    assert trimmer.trim(Owners(os.geteuid()), "2500-01-01T00:00:00.000000Z") == 2
    assert {e["id"] for e in spool.events()} >= {"kept-2", "after-events.jsonl"}


def test_a_trim_stopped_halfway_does_not_stop_the_manager(spool_dir: Path, serve: Callable[..., Server]) -> None:
    """`pool prune` stopped with Ctrl-Z while it holds events.jsonl (here: its lock taken
    and kept, as it would be): jobs still run and end; their events land once it lets go."""
    serve()
    run_pool(spool_dir, "run", "--id", "before", "pooltest_tasks:add", "1", "1", check=True)
    held = os.open(spool_dir / "events.jsonl", os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        for n in range(3):  # each one taken in and started by the manager: it is not stuck
            assert run_pool(spool_dir, "run", "--id", f"during-{n}", "pooltest_tasks:add", "2", str(n),
                            check=True).stdout == f"{2 + n}\n"
    finally:
        os.close(held)
    run_pool(spool_dir, "run", "--id", "after", "pooltest_tasks:add", "3", "3", check=True)
    wait_until(lambda: {"during-0", "during-2", "after"} <= {e["id"] for e in Spool(spool_dir).events()
                                                              if e["to"] == "done"},
               what="the events kept back while the log was held")


# ---------------------------------------------------------------- a job's log kept to a size

LINES = 20000


def print_lines(count: int, pause_every: int = 0, gate: Path | None = None) -> list[str]:
    """A command printing ``output line N`` for N up to ``count``, pausing a moment every
    ``pause_every`` lines (a program working between bursts of output); with ``gate``, it
    waits after the first half until the test creates that file."""
    pause = f'[ $((i % {pause_every})) -eq 0 ] && sleep 0.01; ' if pause_every else ""
    wait = f'[ $i -eq {count // 2} ] && until [ -e "$0" ]; do sleep 0.01; done; ' if gate else ""
    return ["sh", "-c", f'i=0; while [ $i -lt {count} ]; do i=$((i+1)); echo "output line $i"; {pause}{wait}done',
            str(gate)]


def test_a_log_past_its_limit_keeps_its_tail_and_says_how_much_was_dropped(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve("--allow-commands", "--max-log-bytes", "8192")
    run_pool(spool_dir, "submit", "--id", "cmd", "--wait", "-q", "--command", *print_lines(LINES), check=True)
    whole = b"".join(b"output line %d\n" % n for n in range(1, LINES + 1))
    log = (spool_dir / "logs" / "cmd.log").read_bytes()
    assert len(log) <= 8192
    dropped, mark_length = joblog.dropped_before(log)
    assert mark_length and whole[dropped:] == log[mark_length:]  # the tail, exactly, from a line start
    assert whole[dropped - 1:dropped] == b"\n"
    # A task writes to its log itself (so do its children): kept to the size all the same.
    run_pool(spool_dir, "submit", "--id", "task", "--wait", "-q", "pooltest_tasks:chatty", str(LINES), check=True)
    assert (spool_dir / "logs" / "task.log").stat().st_size <= 8192


def test_following_a_log_that_is_cut_goes_on_where_it_was(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve("--allow-commands", "--max-log-bytes", "8192")
    gate, shown = tmp_path / "gate", tmp_path / "shown"
    run_pool(spool_dir, "submit", "--id", "f", "--command", *print_lines(6000, 300, gate), check=True)
    with shown.open("wb") as out:
        follower = subprocess.Popen([*POOL, "--spool", str(spool_dir), "logs", "-f", "f"], stdout=out,
                                    stderr=subprocess.PIPE, env=env_for_tests())
    try:  # the second half (50 KB: several cuts of the 8 KB log) is written while it follows
        wait_until(lambda: b"output line 3000\n" in shown.read_bytes() or follower.poll() is not None,
                   what="the follower showing the first half")
        gate.touch()
        assert follower.wait(timeout=60) == 0, follower.stderr.read() if follower.stderr else ""
    finally:
        if follower.poll() is None:
            follower.kill()
        if follower.stderr:
            follower.stderr.close()
    followed = shown.read_text().splitlines()
    assert followed[-1] == "output line 6000"
    numbers = [int(line.split()[-1]) for line in followed if line.startswith("output line ")]
    notices = [line for line in followed if not line.startswith("output line ")]
    # The log may have been cut before the follower began: it shows the log's own first line.
    earlier = joblog.dropped_before(notices.pop(0).encode() + b"\n")[0] if notices and "earlier output" in notices[0] else 0
    assert all(line.startswith("--- pool: ") and "were cut from the log" in line for line in notices), notices
    # What was not shown is said: the lines missing are exactly the bytes said dropped.
    missing = sum(len(b"output line %d\n" % n) for n in set(range(1, 6001)) - set(numbers))
    assert missing == earlier + sum(int(line.split()[2]) for line in notices)


def test_trim_keeps_appending_descriptors_appending_after_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    lines = [b"line %04d\n" % n for n in range(1000)]
    os.write(fd, b"".join(lines))
    assert joblog.trim(fd, 4096)
    os.write(fd, b"after\n")
    data = path.read_bytes()
    dropped, mark_length = joblog.dropped_before(data)
    assert data[mark_length:] == b"".join(lines)[dropped:] + b"after\n" and len(data) < 2200
    assert not joblog.trim(fd, 4096)  # within the limit: untouched
    # A second cut counts what the first dropped too.
    os.write(fd, b"".join(lines))
    joblog.trim(fd, 4096)
    again, mark = joblog.dropped_before(path.read_bytes())
    assert again == len(b"".join(lines)) * 2 + len(b"after\n") - len(path.read_bytes()) + mark
    os.close(fd)


def test_the_bytes_written_to_a_log_count_what_its_cuts_dropped_and_nothing_else_is_read(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, b"".join(b"line %04d\n" % n for n in range(1000)))
    assert joblog.written(str(path)) == 10_000
    joblog.trim(fd, 4096)
    os.write(fd, b"after\n")
    os.close(fd)
    assert path.stat().st_size < 4096 and joblog.written(str(path)) == 10_006  # a new hub writes on from there
    assert joblog.written(str(tmp_path / "none.log")) == 0
    os.mkfifo(tmp_path / "fifo.log")
    assert joblog.written(str(tmp_path / "fifo.log")) == 0  # not waited on
    (tmp_path / "link.log").symlink_to(path)
    assert joblog.written(str(tmp_path / "link.log")) == 0  # not followed


def test_a_follower_resumes_after_what_it_showed_or_says_what_it_missed() -> None:
    assert joblog.resume_at((1000, 80), joblog.output_shown((0, 0), 1500)) == (580, 0)
    assert joblog.resume_at((1000, 80), 400) == (80, 600)
    assert joblog.resume_at((0, 0), 400) == (0, 0)  # shortened, but not by a cut


# ---------------------------------------------------------------- pool service

def test_service_prints_a_unit_whose_command_serves_the_spool_and_stops_cleanly(
        spool_dir: Path, tmp_path: Path) -> None:
    weird = tmp_path / "a spool with $pace and 100%"
    unit = run_pool(weird, "service", "--workers", "1", "--tasks", "pooltest_tasks", "--grace", "5",
                    check=True, cwd=TESTS).stdout
    fields = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line)
    # Stopped or restarted, the manager detaches: its running jobs are left to the next one.
    assert (fields["KillMode"], fields["KillSignal"], fields["Type"], fields["WorkingDirectory"]) == (
        "process", "SIGUSR2", "exec", str(TESTS))
    assert "# On stop and restart (detach): running jobs run on" in unit
    # systemd's own unquoting: %% and $$ are one character; then words as a shell splits them.
    argv = shlex.split(fields["ExecStart"].replace("%%", "%").replace("$$", "$"))
    # This Python, running pool's command line whatever folder it starts in (never `-m pool`,
    # which imports a pool/ found in the working directory first).
    assert argv[:2] == [sys.executable, "-c"] and "from pool.cli.main import main" in argv[2]
    assert argv[argv.index("--spool") + 1] == str(weird)
    manager = subprocess.Popen(argv, cwd=TESTS, env=env_for_tests(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: (weird / "manager.pid").exists() or manager.poll() is not None, what="served")
        assert run_pool(weird, "run", "pooltest_tasks:add", "2", "3", check=True).stdout == "5\n"
        manager.send_signal(getattr(signal, fields["KillSignal"]))  # KillMode=process: to the manager alone
        assert manager.wait(timeout=60) == 0
    finally:
        if manager.poll() is None:
            manager.kill()
            manager.wait()


def test_service_install_writes_a_user_unit_and_refuses_bad_serve_options(tmp_path: Path) -> None:
    config = tmp_path / "config"
    installed = run_pool(tmp_path / "s", "service", "--install", "--name", "pool-test", "--workers", "2",
                         env={"XDG_CONFIG_HOME": str(config)}, check=True)
    unit = config / "systemd" / "user" / "pool-test.service"
    assert "--workers 2" in unit.read_text() and "WantedBy=default.target" in unit.read_text()
    assert "systemctl --user enable --now pool-test" in installed.stdout
    for on_stop, kill_mode, signal_name, timeout in (("interrupt", "mixed", "SIGTERM", "45"),
                                                      ("drain", "mixed", "SIGUSR1", "infinity")):
        unit_text = run_pool(tmp_path / "s", "service", "--on-stop", on_stop, "--grace", "10", "--kill-grace", "5",
                             check=True).stdout
        fields = dict(line.split("=", 1) for line in unit_text.splitlines() if "=" in line and line[0] != "#")
        assert (fields["KillMode"], fields["KillSignal"], fields["TimeoutStopSec"]) == (kill_mode, signal_name, timeout)
    bad = run_pool(tmp_path / "s", "service", "--workers", "0")
    assert bad.returncode == 2 and "pool serve: Invalid value for '--workers'" in bad.stderr


@pytest.mark.needs_systemd_analyze("to check a unit as systemd reads it")
def test_a_unit_written_from_odd_folders_is_one_systemd_accepts_as_written(tmp_path: Path) -> None:
    """`pool service` run from a folder with a space wrote WorkingDirectory="...", which
    systemd refuses (fatal in systemd-analyze verify); $ was doubled in Environment= and
    WorkingDirectory=, where systemd expands no variable; a % of the spool's path was left
    in Description=, where it starts a specifier."""
    odd = 'a dir/100% $HOME "quoted" back\\slash é'
    here, spool = tmp_path / odd, tmp_path / f"spool {odd}"
    here.mkdir(parents=True)
    unit = run_pool(spool, "service", "--workers", "1", check=True, cwd=here,
                    env={"PATH": f"/usr/bin:/bin:{here}"}).stdout
    path = tmp_path / "pool-odd.service"
    path.write_text(unit)
    verified = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    assert verified.returncode == 0 and "pool-odd.service" not in verified.stderr, verified.stderr + unit
    fields = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line)
    assert fields["WorkingDirectory"] == str(here).replace("%", "%%")
    assert fields["Description"] == f"pool: background jobs of {spool}".replace("%", "%%")
    environment = shlex.split(fields["Environment"].replace("%%", "%"))
    assert environment == [f"PATH=/usr/bin:/bin:{here}"]


def test_systemd_words_are_quoted_as_systemd_reads_them() -> None:
    assert systemd_quote("/usr/bin/python3") == "/usr/bin/python3"
    assert systemd_quote("a b") == '"a b"'
    assert systemd_quote('say "hi" $HOME 100%') == '"say \\"hi\\" $$HOME 100%%"'


def test_one_jobs_events_are_its_own_in_both_logs_and_no_others(spool_dir: Path) -> None:
    """`pool status ID` finds a job's events by a byte search of the logs (a full log is
    hundreds of thousands of lines): an id that begins another's, or one named in another
    job's line only as a value of another key, or a line cut short, is not its event."""
    spool = Spool(spool_dir)
    spool.dir.create()
    (spool_dir / "events.1.jsonl").write_bytes(event(OLD, "j1") + event(OLD, "j10") + b'{"time":"x","id":"j1')
    (spool_dir / "events.jsonl").write_bytes(
        event(NEW, "j10") + orjson.dumps({"time": NEW, "id": "other", "x": {"id": "j1"}}) + b"\n"
        + event(NEW, "j1").rstrip(b"\n"))  # the last line, with no newline after it yet
    assert [(e["id"], e["time"]) for e in spool.events("j1")] == [("j1", OLD), ("j1", NEW)]
    assert [e["id"] for e in spool.events("j10")] == ["j10", "j10"]
    (spool_dir / "events.jsonl").write_bytes(b"")
    assert [e["time"] for e in spool.events("j1")] == [OLD]  # an empty log maps nothing


def test_files_written_together_are_named_in_order_and_one_that_cannot_be_stops_the_rest(tmp_path: Path) -> None:
    """A batch's statuses are written together (one flush under --durable): each is named
    in turn and said to be; one that cannot be named leaves those after it unnamed, and no
    temp file of any behind."""
    folder = Folder(tmp_path, durable=True)
    (tmp_path / "b.json").mkdir()
    (tmp_path / "b.json" / "x").write_text("a folder in the way")
    named: list[int] = []
    with pytest.raises(OSError):
        folder.write_group([("a.json", b"1", 0o600), ("b.json", b"2", 0o600), ("c.json", b"3", 0o600)], named.append)
    assert named == [0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]
    assert (tmp_path / "a.json").read_bytes() == b"1"
