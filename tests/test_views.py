"""The terminal surface: rendering (golden text, colour off), filters, the live view
under a pseudo-terminal, housekeeping commands and shell completion."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import subprocess
import termios
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import click
import pytest
from rich.console import Console

from pool.cli import render
from pool.cli.views import Duration, matches
from conftest import POOL, Server, drop, env_for_tests, refused, run_pool, start_running, state_of, status_doc, wait_until
from pool import lifecycle
from pool.jobfile import parse_job
from pool.client import Spool
from pool.model import JobStatus, new_status

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def iso(at: datetime) -> str:
    return at.isoformat(timespec="microseconds").replace("+00:00", "Z")


def job(job_id: str, **fields: object) -> JobStatus:
    return new_status(parse_job({"task": "m:f", "id": job_id, **fields}, "t", "t"), iso(T0))


def running(job_id: str, fraction: float | None, since: float, quiet_for: float = 0.0, **fields: object) -> JobStatus:
    now = T0 + timedelta(seconds=since)
    status = lifecycle.start(job(job_id, **fields), 1, 1, iso(T0))
    return replace(status, progress=fraction, updated_at=iso(now - timedelta(seconds=quiet_for)))


def text(statuses: list[JobStatus], at: datetime) -> str:
    out = Console(width=160, no_color=True, record=True)
    out.print(render.status_table(statuses, at, bar_width=10))
    return out.export_text()


def test_eta_and_rate_come_from_progress_over_time() -> None:
    at = T0 + timedelta(seconds=60)
    status = running("r", 0.25, 60)
    assert (render.eta(status, at), render.rate(status, at)) == ("3m00s", "25.0%/min")
    assert render.eta(running("r", None, 60), at) == "" and render.eta(running("r", 1.0, 60), at) == ""
    assert render.eta(job("q"), at) == ""


def test_a_quiet_running_job_is_flagged_as_possibly_stalled() -> None:
    at = T0 + timedelta(seconds=600)
    assert render.state_text(running("s", 0.5, 600, quiet_for=render.STALLED_AFTER + 1), at) == "running stalled?"
    assert render.state_text(running("s", 0.5, 600, quiet_for=5), at) == "running"


def test_golden_table_and_its_optional_columns() -> None:
    at = T0 + timedelta(seconds=60)
    plain = text([job("q1"), job("q2")], at)
    assert plain.splitlines()[0].split() == ["ID", "NAME", "STATE", "PROGRESS", "ELAPSED"]
    assert "q1  t     queued  ··········" in plain
    busy = text([running("r1", 0.25, 60, priority=5), job("q1")], at)
    assert busy.splitlines()[0].split() == ["ID", "NAME", "STATE", "PROGRESS", "RATE", "ETA", "ELAPSED", "PRIO"]
    assert "r1  t     running  ██▌·······  25%  25.0%/min  3m00s  1m00s    5" in busy


def test_summary_and_footer_count_every_state() -> None:
    done = lifecycle.succeed(lifecycle.start(job("d"), 1, 1, iso(T0)), None, iso(T0))
    assert render.summary([job("a"), done, done]) == "1 queued, 2 done"


@pytest.mark.parametrize("given, seconds", [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 604800),
                                            ("1.5h", 5400)])
def test_durations(given: str, seconds: float) -> None:
    assert Duration().convert(given, None, None) == seconds


def test_a_bad_duration_is_a_usage_error() -> None:
    with pytest.raises(click.BadParameter, match="not a duration"):
        Duration().convert("soon", None, None)


def test_filters_by_state_name_and_age() -> None:
    old, new = job("old-1", name="render a"), replace(job("new-1", name="encode b"), created_at=iso(datetime.now(timezone.utc)))
    assert matches(old, ("queued",), None, None) and not matches(old, ("done",), None, None)
    assert matches(old, ("done", "queued"), None, None)  # --state given twice: either
    assert matches(old, (), "render*", None) and matches(old, (), "old-?", None)
    assert not matches(new, (), "render*", None)
    assert matches(new, (), None, 3600) and not matches(old, (), None, 3600)


# ---------------------------------------------------------------- end to end

def test_prune_removes_only_old_finished_jobs(spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve()
    gate = tmp_path / "gate"
    drop(spool_dir, "a.json", {"task": "pooltest_tasks:add", "args": [1, 2], "id": "a"})
    drop(spool_dir, "f.json", {"task": "pooltest_tasks:fail", "args": ["x"], "id": "f"})
    drop(spool_dir, "h.json", {"task": "pooltest_tasks:hold", "args": [str(gate)], "id": "h"})
    wait_until(lambda: state_of(spool_dir, "a") == "done" and state_of(spool_dir, "f") == "failed"
               and state_of(spool_dir, "h") == "running", what="one done, one failed, one running")
    assert run_pool(spool_dir, "prune", "--older-than", "1h", check=True).stdout.strip() == "removed 0 job(s)"
    result = run_pool(spool_dir, "prune", "--older-than", "0s", "--state", "failed", check=True)
    assert result.stdout.strip() == "removed 1 job(s): f"
    assert status_doc(spool_dir, "f") is None and not (spool_dir / "logs" / "f.log").exists()
    assert [(e["from"], e["to"]) for e in Spool(spool_dir).events("f")][-1] == ("failed", "pruned")
    drop(spool_dir, "bad.json", b"{not json")
    refused(spool_dir, "bad.json")
    result = run_pool(spool_dir, "prune", "--older-than", "0", check=True)
    assert result.stdout.splitlines()[:2] == ["removed 1 job(s): a", "removed 1 rejected file(s): bad.json"]
    assert re.fullmatch(r"removed \d+ line\(s\) of events.jsonl", result.stdout.splitlines()[2])
    assert os.listdir(spool_dir / "rejected") == []
    assert state_of(spool_dir, "h") == "running"  # never a running job
    assert {e["id"] for e in Spool(spool_dir).events()} == {"h"}  # nor its timeline
    gate.touch()


def test_stop_asks_the_manager_to_stop(spool_dir: Path, serve: Callable[..., Server]) -> None:
    server = serve()
    result = run_pool(spool_dir, "stop", check=True)
    assert server.proc is not None and server.proc.wait(timeout=30) == 0
    pid = server.proc.pid
    assert result.stdout.splitlines() == [f"stopping the manager (pid {pid})", f"manager (pid {pid}) stopped"]
    result = run_pool(spool_dir, "stop")
    assert result.returncode == 1 and result.stderr.strip() == f"Error: no manager is serving {spool_dir}"


def test_job_ids_complete_in_the_shell(spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve()
    for job_id in ("alpha-1", "alpha-2", "beta"):
        drop(spool_dir, f"{job_id}.json", {"task": "pooltest_tasks:add", "args": [1, 1], "id": job_id})
    wait_until(lambda: all(state_of(spool_dir, i) == "done" for i in ("alpha-1", "alpha-2", "beta")), what="done")
    env = env_for_tests(_POOL_COMPLETE="bash_complete", COMP_WORDS=f"pool --spool {spool_dir} kill al",
                        COMP_CWORD="4")
    out = subprocess.run([*POOL], env=env, capture_output=True, text=True, timeout=30).stdout
    assert [line.split(",", 1)[1] for line in out.splitlines()] == ["alpha-1", "alpha-2"]


def test_wait_quiet_says_it_with_the_exit_code(spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve()
    drop(spool_dir, "ok.json", {"task": "pooltest_tasks:add", "args": [1, 1], "id": "ok"})
    drop(spool_dir, "no.json", {"task": "pooltest_tasks:fail", "args": ["x"], "id": "no"})
    assert run_pool(spool_dir, "wait", "-q", "ok").stdout == ""
    quiet = run_pool(spool_dir, "wait", "-q", "ok", "no")
    assert (quiet.returncode, quiet.stdout) == (1, "")
    loud = run_pool(spool_dir, "wait", "ok", "no")
    assert loud.stdout.splitlines() == ["ok: done", "no: failed (ValueError: x)"]


def read_screen(fd: int, until: Callable[[str], bool], timeout: float = 30) -> str:
    """Read a pseudo-terminal until ``until(everything read)`` holds."""
    seen = b""
    deadline = time.monotonic() + timeout
    while not until(seen.decode(errors="replace")):
        if time.monotonic() >= deadline:
            raise AssertionError(f"the screen never showed what was expected:\n{seen.decode(errors='replace')[-2000:]}")
        if select.select([fd], [], [], 0.1)[0]:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen.decode(errors="replace")


def take_terminal() -> None:
    """In the child, after setsid: make the pseudo-terminal its controlling terminal, so
    Ctrl-C typed there reaches it as SIGINT, as in a real shell."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def on_terminal(spool_dir: Path, *args: str, columns: int, lines: int) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``pool ARGS`` on a pseudo-terminal of its own (as typed in a shell there);
    returns the process and the terminal's other end, to read its screen and type."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([*POOL, "--spool", str(spool_dir), *args], stdin=follower, stdout=follower,
                            stderr=follower, env=env_for_tests(TERM="xterm", COLUMNS=str(columns), LINES=str(lines)),
                            start_new_session=True, preexec_fn=take_terminal)
    os.close(follower)
    return proc, leader


def test_the_live_view_refreshes_in_place_and_ends_on_ctrl_c(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve()
    gate = tmp_path / "gate"
    start_running(spool_dir, "live-job", "halfway", str(gate))
    top, leader = on_terminal(spool_dir, "top", columns=120, lines=30)
    try:
        read_screen(leader, lambda s: "live-job" in s and "running" in s and "30%" in s)
        gate.touch()
        read_screen(leader, lambda s: "done" in s and "1 done" in s)  # the same view, redrawn
        os.write(leader, b"\x03")  # Ctrl-C, through the terminal
        assert top.wait(timeout=30) == 0
    finally:
        if top.poll() is None:
            top.send_signal(signal.SIGKILL)
        os.close(leader)


def test_q_quits_the_live_view_and_gives_the_terminal_back_as_it_was(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve()
    start_running(spool_dir, "live-job", "halfway", str(tmp_path / "gate"))
    top, leader = on_terminal(spool_dir, "top", columns=120, lines=30)
    try:
        before = termios.tcgetattr(leader)[3]
        read_screen(leader, lambda s: "live-job" in s and "30%" in s)
        os.write(leader, b"q")
        assert top.wait(timeout=30) == 0
        assert termios.tcgetattr(leader)[3] == before  # echo and line editing back on
        assert before & termios.ECHO and before & termios.ICANON
    finally:
        if top.poll() is None:
            top.send_signal(signal.SIGKILL)
        os.close(leader)
        (tmp_path / "gate").touch()


def test_output_is_plain_when_not_a_terminal_or_no_color_is_set(spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve()
    drop(spool_dir, "c.json", {"task": "pooltest_tasks:add", "args": [1, 1], "id": "c"})
    wait_until(lambda: state_of(spool_dir, "c") == "done", what="done")
    piped = run_pool(spool_dir, "status", check=True).stdout
    assert "c" in piped and "done" in piped and "\x1b[" not in piped
    leader, follower = pty.openpty()
    shown = subprocess.run([*POOL, "--spool", str(spool_dir), "status"], stdin=follower, stdout=follower,
                           stderr=follower, env=env_for_tests(TERM="xterm", NO_COLOR="1"), timeout=60)
    os.close(follower)
    screen = read_screen(leader, lambda s: "1 done" in s)
    os.close(leader)
    assert shown.returncode == 0 and "done" in screen and "\x1b[3" not in screen  # no colour codes
