"""Tasks of test_promises_users.py (served with ``--tasks promise_users_tasks``).

A job that must keep running waits for a *gate* file the test creates: the test decides
when it ends, so nothing depends on timing."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pool
from waiting import wait_for_gate


@pool.task
def say(text: str) -> int:
    """Print ``text`` (to the job's log) and return its length."""
    print(text, flush=True)
    return len(text)


@pool.task
def hold(gate: str) -> str:
    """Run until ``gate`` exists (or until killed)."""
    print("holding until", gate, flush=True)
    wait_for_gate(gate)
    return "released"


@pool.task
def stubborn(gate: str) -> str:
    """Like ``hold``, but puts off a SIGTERM (noting it in ``<gate>.term``) until the gate
    opens, and then dies of it: a kill of it stays under way until the test says."""
    term = Path(f"{gate}.term")
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: term.touch())
    try:
        print("holding until", gate, "and putting off SIGTERM", flush=True)
        wait_for_gate(gate)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if term.exists():
        os.kill(os.getpid(), signal.SIGTERM)  # the signal it put off, now with the worker's own handling
    return "released"


@pool.task
def whoami() -> dict[str, object]:
    """Who runs the job: its ids, groups, HOME and working directory."""
    return {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
            "home": os.environ.get("HOME"), "user": os.environ.get("USER"), "cwd": os.getcwd()}


@pool.task
def resumes() -> list[int]:
    """Resumes the uids of the attempts before it, saves them with its own, and fails the
    first time: run again, it returns the uid of each attempt."""
    seen = [*(pool.resume() or []), os.geteuid()]
    pool.checkpoint(seen)
    if len(seen) == 1:
        raise RuntimeError("the first attempt fails")
    return seen


@pool.task
def leaves_a_child(pid_file: str) -> str:
    """Starts a long sleep it never waits for, writes its pid to ``pid_file``, and returns."""
    import subprocess

    child = subprocess.Popen(["sleep", "300"])
    Path(pid_file).write_text(str(child.pid))
    return "left it"
