"""What a kill, a timeout and a stop promise, checked from the outside after defects found
by attacking pool from the outside, each reproduced here: when a job is final (or
put back queued by a stop), no process of it is left; a slot runs its next job only once
the last one's processes are all gone; an adopted job's timeout holds; a signal to the
manager's whole group is a graceful stop; what a task forks or spawns ends with it; an
unnamed signal and a task's own exit code are ordinary failures.

The program that shrugs off SIGTERM is, where it matters, *not* the group's leader: the
worker leads the group and dies of SIGTERM at once, so only a stop that waits for the
whole group (and sends SIGKILL after the grace whatever the leader did) ends the rest."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import (
    POOL, Server, drop, env_for_tests, events_of, pid_alive, run_pool, running_pid, start_run, state_of, status_doc,
    wait_until)
from pool.client import Spool
from pool.model import parse_time

TASKS = ("--tasks", "promise_kill_tasks")


def task(name: str, *args: object, **fields: object) -> dict[str, object]:
    return {"task": f"promise_kill_tasks:{name}", "args": list(args), **fields}


def term_ignoring_command(pidfile: Path) -> list[str]:
    """A shell and its child `sleep 60`, both ignoring SIGTERM, neither the group's leader;
    it writes "<shell pid> <sleep pid>" to ``pidfile`` (atomically) once both run."""
    tmp = pidfile.with_name(pidfile.name + ".tmp")
    return ["sh", "-c", f"trap '' TERM; sleep 60 & echo $$ $! > '{tmp}'; mv '{tmp}' '{pidfile}'; wait"]


def pids_from(pidfile: Path, count: int = 1) -> list[int]:
    text = wait_until(lambda: pidfile.exists() and pidfile.read_text(), 30, f"{pidfile.name} written")
    pids = [int(p) for p in text.split()]
    assert len(pids) == count, text
    return pids


def alive(pids: list[int]) -> list[int]:
    return [p for p in pids if pid_alive(p)]


def runs_in(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def inline_processes(spool_dir: Path) -> list[int]:
    """Processes of `python -m pool.inline ...` for this test's spool (supervisors, and
    the old code's inline workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"pool.inline" in args and any(str(spool_dir).encode() in a for a in args) and pid_alive(int(entry)):
            found.append(int(entry))
    return found


class Leftovers:
    """What a test started and must not leave behind, whatever pool did: ended (SIGKILL)
    at teardown. Only processes this test's jobs reported, by pid or by job group."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.groups: list[int] = []
        self.procs: list[subprocess.Popen[str] | subprocess.Popen[bytes]] = []
        self.spools: list[Path] = []

    def end(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for spool_dir in self.spools:  # a supervisor first, so it starts nothing more
            for pid in inline_processes(spool_dir):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for pgid in self.groups:
            if pgid > 1:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for pid in self.pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def leftovers() -> Iterator[Leftovers]:
    """Listed after `serve` in a test's arguments, so it runs before the managers stop."""
    found = Leftovers()
    yield found
    found.end()


# ---------------------------------------------------------------- 1. SIGTERM shrugged off by the group

def test_pool_kill_waits_for_the_grace_the_manager_gives_and_says_so_once(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path, leftovers: Leftovers) -> None:
    """With `pool serve --kill-grace 60` and a job that shrugs off SIGTERM, `pool kill` gave
    up after 35 s ("not finished after 35s", exit 1: it counted on the default grace of 5 s)
    while the manager was still, rightly, killing the job. It waits for the grace the manager
    gives, and says so once."""
    serve(*TASKS, "--allow-commands", "--kill-grace", "60")
    assert Spool(spool_dir).kill_grace() == 60.0
    pidfile = tmp_path / "pids"
    drop(spool_dir, "s.json", {"command": term_ignoring_command(pidfile), "id": "s"})
    pids = pids_from(pidfile, 2)
    leftovers.pids += pids
    leftovers.groups.append(running_pid(spool_dir, "s"))
    said = tmp_path / "kill.err"
    with open(said, "w") as err:
        killer = subprocess.Popen([*POOL, "--spool", str(spool_dir), "kill", "s"], stdout=subprocess.PIPE,
                                  stderr=err, text=True, env=env_for_tests())
    leftovers.procs.append(killer)
    wait_until(lambda: "SIGKILL after 60s" in said.read_text(), 30, "pool kill saying how long it may wait")
    assert killer.poll() is None  # waiting: the manager is still killing the job
    for pid in pids:
        os.kill(pid, signal.SIGKILL)  # stands for the SIGKILL the manager sends when the grace is over
    out, _ = killer.communicate(timeout=30)
    assert (killer.returncode, out.strip()) == (0, "s: cancelled")
    assert said.read_text().count("SIGKILL after") == 1


@pytest.mark.parametrize("how", ["kill", "timeout"])
def test_a_command_ignoring_sigterm_is_gone_when_final_and_before_the_next_job_of_its_slot(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path, how: str, leftovers: Leftovers) -> None:
    """Seen from outside: ffmpeg outlived a kill, and 3 ffmpegs ran under --workers 2. With one
    worker, a second job waits behind the first (sent ahead to its worker): it must not
    start while any process of the first is alive, and the first is final only once its
    processes are all gone."""
    serve(*TASKS, "--allow-commands", "--workers", "1", "--kill-grace", "0.5", "--grace", "1")
    pidfile = tmp_path / "pids"
    limits = {"timeout": 1.5} if how == "timeout" else {}
    drop(spool_dir, "a.json", {"command": term_ignoring_command(pidfile), "id": "a", **limits})
    pids = pids_from(pidfile, 2)
    leftovers.pids += pids
    leftovers.groups.append(running_pid(spool_dir, "a"))
    drop(spool_dir, "b.json", task("alive_pids", str(pidfile), id="b"))
    wait_until(lambda: state_of(spool_dir, "b") is not None, 10, "b taken in, behind a")
    if how == "kill":
        result = run_pool(spool_dir, "kill", "a", "--grace", "0.5", check=True)
        still = alive(pids)
        assert result.stdout.strip() == "a: cancelled"
    else:
        wait_until(lambda: state_of(spool_dir, "a") == "failed", 15, "a timed out")
        still = alive(pids)
        assert status_doc(spool_dir, "a")["error"]["type"] == "Timeout"  # type: ignore[index]
    assert still == [], f"processes of 'a' alive once it was final: {still}"
    wait_until(lambda: state_of(spool_dir, "b") == "done", 15, "b done")
    assert status_doc(spool_dir, "b")["result"] == [], "b ran while processes of 'a' were alive"  # type: ignore[index]


def test_a_command_ignoring_sigterm_is_gone_when_a_stop_puts_it_back(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path, leftovers: Leftovers) -> None:
    """Seen from outside: after pool stop and pool serve, the same job ran twice at once: the stop put
    the job back queued while its processes ran on."""
    server = serve(*TASKS, "--allow-commands", "--kill-grace", "0.5", "--grace", "0.3")
    pidfile = tmp_path / "pids"
    drop(spool_dir, "a.json", {"command": term_ignoring_command(pidfile), "id": "a"})
    pids = pids_from(pidfile, 2)
    leftovers.pids += pids
    leftovers.groups.append(running_pid(spool_dir, "a"))
    stopper = subprocess.Popen([*POOL, "--spool", str(spool_dir), "stop"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env_for_tests())
    leftovers.procs.append(stopper)
    wait_until(lambda: state_of(spool_dir, "a") == "queued", 15, "a put back queued")
    still = alive(pids)
    _out, err = stopper.communicate(timeout=30)
    assert stopper.returncode == 0, err
    assert server.proc is not None and server.proc.wait(timeout=30) == 0
    assert still == [], f"processes of 'a' alive once it was queued again: {still}"
    doc = status_doc(spool_dir, "a")
    assert doc is not None and (doc["state"], doc["attempt"]) == ("queued", 1)
    assert alive(pids) == []


def test_an_inline_command_ignoring_sigterm_is_gone_once_pool_kill_returns(
        spool_dir: Path, tmp_path: Path, leftovers: Leftovers) -> None:
    pidfile = tmp_path / "pids"
    leftovers.spools.append(spool_dir)
    runner = start_run(spool_dir, "--id", "inl", "--", *term_ignoring_command(pidfile))
    leftovers.procs.append(runner)
    pids = pids_from(pidfile, 2)
    leftovers.pids += pids
    leftovers.groups.append(running_pid(spool_dir, "inl"))
    result = run_pool(spool_dir, "kill", "inl", "--grace", "0.5", check=True)
    still = alive(pids)
    assert result.stdout.strip() == "inl: cancelled"
    assert still == [], f"processes of the inline job alive once it was cancelled: {still}"
    assert runner.wait(timeout=30) == 1


# ---------------------------------------------------------------- 2. an inline kill's grace

def test_an_inline_job_ignoring_sigterm_honours_the_grace_of_pool_kill(
        spool_dir: Path, tmp_path: Path, leftovers: Leftovers) -> None:
    """The supervisor used its own 5 s whatever `pool kill --grace` asked for."""
    ready = tmp_path / "ready"
    leftovers.spools.append(spool_dir)
    runner = start_run(spool_dir, "--id", "stubborn", "promise_kill_tasks:ignore_term", str(ready))
    leftovers.procs.append(runner)
    [pid] = pids_from(ready)
    leftovers.groups.append(pid)
    result = run_pool(spool_dir, "kill", "stubborn", "--grace", "0.3", check=True)
    assert result.stdout.strip() == "stubborn: cancelled"
    assert not pid_alive(pid)
    # From the SIGTERM the job shrugged off to its end, as the supervisor recorded it: the
    # grace asked for (0.3 s), not the supervisor's own 5 s.
    doc = status_doc(spool_dir, "stubborn")
    assert doc is not None
    term_to_end = parse_time(doc["finished_at"]).timestamp() - float(Path(f"{ready}.term").read_text())
    assert term_to_end < 2.5, f"the job was killed {term_to_end:.1f}s after its SIGTERM, not 0.3s"
    assert runner.wait(timeout=30) == 1


# ---------------------------------------------------------------- 3. an adopted job's timeout

def test_an_adopted_job_still_times_out(
        spool_dir: Path, serve: Callable[..., Server], leftovers: Leftovers) -> None:
    """Found by attack: the next manager adopted the job and never enforced its timeout."""
    first = serve(*TASKS, "--kill-grace", "0.5", "--grace", "1")
    drop(spool_dir, "t.json", task("until_stopped", id="t", timeout=2))
    pid = running_pid(spool_dir, "t")
    leftovers.groups.append(pid)
    first.stop(signal.SIGKILL)
    assert pid_alive(pid)  # the orphan runs on, to be adopted
    second = serve(*TASKS, "--kill-grace", "0.5", "--grace", "1")
    assert "job t: adopted" in second.output()
    wait_until(lambda: state_of(spool_dir, "t") == "failed", 15, "the adopted job timed out")
    gone = not pid_alive(pid)
    doc = status_doc(spool_dir, "t")
    assert doc is not None and doc["error"]["type"] == "Timeout", doc
    assert gone, f"the adopted job's process {pid} is alive after it timed out"


# ---------------------------------------------------------------- 4. SIGTERM to the manager's group

def test_sigterm_to_the_managers_process_group_is_a_graceful_stop(
        spool_dir: Path, serve: Callable[..., Server], leftovers: Leftovers) -> None:
    """Found by attack: the signal also ended the forkserver; the manager took every worker for
    dead and exited at once, the jobs running on, detached, past --grace."""
    manager = serve(*TASKS, "--workers", "1", "--grace", "1", "--kill-grace", "0.5", new_session=True)
    assert manager.proc is not None
    drop(spool_dir, "long.json", task("until_stopped", id="long"))
    pid = running_pid(spool_dir, "long")
    leftovers.groups.append(pid)
    began = time.monotonic()
    os.killpg(manager.proc.pid, signal.SIGTERM)
    code = manager.proc.wait(timeout=30)
    took = time.monotonic() - began
    gone = not pid_alive(pid)
    assert code == 0, manager.output()
    assert took >= 1.0, f"the manager stopped after {took:.2f}s, before its --grace of 1s"
    doc = status_doc(spool_dir, "long")
    assert doc is not None and (doc["state"], doc["attempt"], doc["error"]) == ("queued", 1, None), doc
    assert gone, f"the job's process {pid} is alive after the manager stopped:\n{manager.output()}"


# ---------------------------------------------------------------- 5. a forked child and the job's lock

def test_a_forked_child_does_not_keep_the_job_locked(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path, leftovers: Leftovers) -> None:
    """Found by attack: the child of a fork (no exec) inherited the lock's descriptor; while it
    lived the retry could not start and the job stayed queued."""
    serve(*TASKS, "--grace", "1")
    runs, pidfile = tmp_path / "runs", tmp_path / "child"
    drop(spool_dir, "f.json", task("fork_then_fail", str(runs), str(pidfile), 60, id="f", retries=1,
                                   retry_delay=0))
    [child] = pids_from(pidfile)
    leftovers.pids.append(child)
    wait_until(lambda: state_of(spool_dir, "f") == "done", 10, "the second attempt done promptly")
    gone = not pid_alive(child)
    doc = status_doc(spool_dir, "f")
    assert doc is not None and (doc["attempt"], doc["result"]) == (2, 2), doc
    assert runs_in(runs) == ["f", "f"]
    assert gone, f"the forked child {child} is alive after the job ended"


# ---------------------------------------------------------------- 6. a task's background process

@pytest.mark.parametrize("then", ["done", "manager stopped"])
def test_what_a_task_leaves_running_ends_with_it(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path, then: str, leftovers: Leftovers) -> None:
    """Found by attack: a task's background process outlived the job and the manager."""
    server = serve(*TASKS, "--grace", "1")
    pidfile = tmp_path / "bg"
    drop(spool_dir, "bg.json", task("spawn_background", str(pidfile), id="bg"))
    [bg] = pids_from(pidfile)
    leftovers.pids.append(bg)
    # Gone means reaped too: a zombie handed to an init that does not reap (as here) stays.
    if then == "done":
        wait_until(lambda: state_of(spool_dir, "bg") == "done", 10, "done")
        gone = not os.path.exists(f"/proc/{bg}")
    else:
        assert server.stop() == 0  # right away: the job ends within the grace
        gone = not os.path.exists(f"/proc/{bg}")
        assert state_of(spool_dir, "bg") == "done"
    assert status_doc(spool_dir, "bg")["result"] == bg  # type: ignore[index]
    assert gone, f"the task's background process {bg} is alive after the job ({then})"


# ---------------------------------------------------------------- 7. a signal Python has no name for

def test_a_command_killed_by_an_unnamed_signal_fails_once(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve(*TASKS, "--allow-commands", "--workers", "1", "--grace", "1")
    runs = tmp_path / "runs"
    drop(spool_dir, "sig.json", {"command": ["sh", "-c", f"echo sig >> '{runs}'; kill -40 $$"], "id": "sig",
                                 "retries": 0})
    wait_until(lambda: state_of(spool_dir, "sig") in ("failed", "done", "cancelled"), 15, "sig final")
    doc = status_doc(spool_dir, "sig")
    assert doc is not None and doc["state"] == "failed", doc
    assert doc["exit_code"] == -40 and doc["error"]["type"] == "CommandFailed", doc
    assert "signal 40" in doc["error"]["message"], doc["error"]
    # A job behind it on the one worker is done: the manager has moved on for good.
    drop(spool_dir, "next.json", {"command": ["true"], "id": "next"})
    wait_until(lambda: state_of(spool_dir, "next") == "done", 15, "the next job done")
    assert runs_in(runs) == ["sig"], "the job ran again"
    assert state_of(spool_dir, "sig") == "failed"
    wait_until(lambda: [e["to"] for e in events_of(spool_dir, "sig") if e["to"] in ("failed", "done", "cancelled")]
               == ["failed"], what="its one end heard")


# ---------------------------------------------------------------- 8. exit code 3 of an inline task

def test_an_inline_task_exiting_with_code_3_fails_once(
        spool_dir: Path, tmp_path: Path, leftovers: Leftovers) -> None:
    """Seen from outside: exit code 3 was the inline manager's private "skipped" code: it took the
    task's own exit 3 for "another process runs it" and ran it again, for ever."""
    runs = tmp_path / "runs"
    leftovers.spools.append(spool_dir)
    runner = start_run(spool_dir, "--id", "three", "promise_kill_tasks:exit_after_run", str(runs), "3")
    leftovers.procs.append(runner)
    wait_until(lambda: runner.poll() is not None, 10, "pool run to return")
    assert runner.returncode == 1
    doc = status_doc(spool_dir, "three")
    assert doc is not None and doc["state"] == "failed", doc
    assert doc["error"]["type"] == "WorkerDied" and "exited with code 3" in doc["error"]["message"], doc["error"]
    assert runs_in(runs) == ["three"]
    # The supervisor ends (it does not go on running the job); how soon is the next test's.
    wait_until(lambda: inline_processes(spool_dir) == [], 15, "no pool.inline process left")
    assert runs_in(runs) == ["three"]
    assert state_of(spool_dir, "three") == "failed"


def test_an_inline_supervisor_ends_with_its_job(spool_dir: Path, leftovers: Leftovers) -> None:
    """Found while writing the test above: once the job is final, the supervisor lingered
    about 5 s (its idle forked worker kept a copy of the supervisor's end of its own pipe,
    so it never saw EOF, and was SIGKILLed after STOP_WAIT). The supervisor holds `pool
    run`'s stdout, so `out=$(pool run -- true)` or subprocess.run(capture_output=True)
    took 5.3 s instead of 0.4 s. Measured from the job's end, as recorded, to the caller's
    EOF, so a slow start of the processes on a loaded machine does not count."""
    leftovers.spools.append(spool_dir)
    result = run_pool(spool_dir, "run", "--id", "quick", "--", "true")  # captured: returns at EOF
    eof = time.time()
    assert (result.returncode, result.stderr.strip()) == (0, "quick: done"), result.stderr
    doc = status_doc(spool_dir, "quick")
    assert doc is not None
    lingered = eof - parse_time(doc["finished_at"]).timestamp()
    assert lingered < 2.5, f"a caller reading `pool run`'s output waited {lingered:.1f}s after its job ended"
    wait_until(lambda: inline_processes(spool_dir) == [], 30, "no pool.inline process left")
