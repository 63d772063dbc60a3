"""`pool run`, `Spool.run` and the inline fallback: subprocess stays a working fallback."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
from conftest import POOL, Server, env_for_tests, events_of, made, run_pool, start_run, state_of, status_doc, wait_until

from pool.client import Spool
from pool.errors import JobFailed


def test_without_a_manager_a_task_runs_inline_and_is_tracked(spool_dir: Path) -> None:
    result = run_pool(spool_dir, "run", "--id", "sum", "pooltest_tasks:add", "2", "3")
    assert (result.returncode, result.stdout, result.stderr.strip()) == (0, "5\n", "sum: done")  # the result on stdout
    doc = status_doc(spool_dir, "sum")
    assert doc is not None and doc["result"] == 5
    assert (spool_dir / "logs" / "sum.log").read_text() == "adding 2 and 3\n"
    wait_until(lambda: [e["to"] for e in events_of(spool_dir, "sum")] == ["queued", "running", "done"],
               what="the events")
    assert events_of(spool_dir, "sum")[1]["reason"].startswith("inline worker pid ")


def test_exit_codes_follow_the_outcome(spool_dir: Path) -> None:
    failed = run_pool(spool_dir, "run", "--", "sh", "-c", "echo nope; exit 4")
    assert failed.returncode == 1 and "failed (CommandFailed: command exited with code 4)" in failed.stderr
    verbose = run_pool(spool_dir, "run", "-v", "--id", "v", "--", "sh", "-c", "echo one; echo two")
    assert verbose.returncode == 0 and verbose.stdout.startswith("one\ntwo\n")
    quiet = run_pool(spool_dir, "run", "-q", "pooltest_tasks:fail", "x")
    assert (quiet.returncode, quiet.stdout) == (1, "")


def test_progress_shows_in_pool_status_and_pool_kill_ends_an_inline_job(spool_dir: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    runner = start_run(spool_dir, "--id", "inl", "pooltest_tasks:halfway", str(gate))
    try:
        wait_until(lambda: (d := status_doc(spool_dir, "inl")) and d["progress"] == 0.3, what="progress on disk")
        table = run_pool(spool_dir, "status", check=True).stdout
        assert "inl" in table and "30%" in table and "running" in table
        assert run_pool(spool_dir, "kill", "inl", check=True).stdout.strip() == "inl: cancelled"
        assert runner.wait(timeout=60) == 1
    finally:
        if runner.poll() is None:
            runner.kill()
    assert state_of(spool_dir, "inl") == "cancelled"


@pytest.mark.parametrize("with_manager", [False, True])
def test_ctrl_c_kills_the_job_and_leaves_it_cancelled(
        spool_dir: Path, serve: Callable[..., Server], with_manager: bool) -> None:
    if with_manager:
        serve()
    runner = start_run(spool_dir, "--id", "endless", "pooltest_tasks:forever")
    pid = wait_until(lambda: (d := status_doc(spool_dir, "endless")) and d["state"] == "running" and d["pid"],
                     what="running")
    runner.send_signal(signal.SIGINT)
    code = runner.wait(timeout=60)
    assert code == 130, runner.communicate()
    assert state_of(spool_dir, "endless") == "cancelled"
    wait_until(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2],
               what="the job's process gone")


@pytest.mark.needs_strace("to deliver a signal at an exact system call")
def test_ctrl_c_the_moment_the_job_is_submitted_still_cancels_it(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    """SIGINT lands as the job's file is renamed into incoming/, before `pool run` has a
    handle on the job (strace delivers it at that system call): the job is cancelled all
    the same, and the exit code is 130, not click's 1."""
    serve()
    interrupted = subprocess.run(
        ["strace", "-qq", "-o", "/dev/null", "-e", "inject=rename,renameat,renameat2:signal=SIGINT:when=1",
         *POOL, "--spool", str(spool_dir), "run", "--id", "caught", "pooltest_tasks:forever"],
        env=env_for_tests(PYTHONDONTWRITEBYTECODE="1"), capture_output=True, text=True, timeout=120)
    assert interrupted.returncode == 130, interrupted.stderr
    assert state_of(spool_dir, "caught") == "cancelled"


def test_with_a_manager_the_job_goes_through_it(spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve()
    result = run_pool(spool_dir, "run", "--id", "via", "pooltest_tasks:add", "1", "1", check=True)
    assert (result.stdout, result.stderr.strip()) == ("2\n", "via: done")
    wait_until(lambda: len(events_of(spool_dir, "via")) == 3, what="events")
    assert events_of(spool_dir, "via")[1]["reason"].startswith("worker pid")


def test_no_inline_waits_for_a_manager(spool_dir: Path) -> None:
    made(spool_dir)
    runner = start_run(spool_dir, "--no-inline", "--id", "later", "pooltest_tasks:add", "20", "22")
    try:
        wait_until(lambda: (spool_dir / "incoming" / "later.json").exists(), what="the job submitted")
        assert runner.poll() is None and state_of(spool_dir, "later") is None  # waiting, not running
        server = Server(spool_dir).start()
        try:
            assert runner.wait(timeout=60) == 0
        finally:
            server.stop()
    finally:
        if runner.poll() is None:
            runner.kill()
    assert status_doc(spool_dir, "later")["result"] == 42  # type: ignore[index]
    assert "waiting for a manager" in runner.stderr.read()  # type: ignore[union-attr]


def test_spool_run_and_inline_fallback_from_python(spool_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.setenv("PYTHONPATH", env_for_tests()["PYTHONPATH"])
    spool = Spool(spool_dir)
    assert spool.run("pooltest_tasks:add", 4, 5) == 9
    with pytest.raises(JobFailed, match="ValueError: bad input"):
        spool.run("pooltest_tasks:fail", "bad input")
    status = spool.run_command([sys.executable, "-c", "print('50%')"])
    assert status.state.value == "done" and status.message == "50%"
    job = spool.submit("pooltest_tasks:add", 1, 2, fallback="inline")
    assert job.wait(timeout=60).result == 3


def test_a_failed_run_shows_why_the_program_failed(spool_dir: Path) -> None:
    """`pool run` said `failed (CommandFailed: command exited with code 1)`, with ffmpeg's
    "No such file" only in `pool logs` and no hint to look there."""
    result = run_pool(spool_dir, "run", "--", "sh", "-c", "echo working; echo 'in.mp4: No such file' >&2; exit 1")
    assert result.returncode == 1
    job_id = result.stderr.split(":")[0]
    assert "its last output:\n  working\n  in.mp4: No such file\n" in result.stderr
    assert f"all of its output: pool logs {job_id}" in result.stderr
