"""Tasks for tests/test_promises_kill.py (served with ``--tasks promise_kill_tasks``; run
inline by ``pool run``, which finds this module through PYTHONPATH=tests).

Each task that leaves a process behind writes its pid to a file the test names, so the
test can look at exactly that process (and end it if pool did not)."""

from __future__ import annotations

import os
import signal
import time
import subprocess
from pathlib import Path

import pool
from pooltest_tasks import record_run
from waiting import until_killed


def write_atomically(path: str, text: str) -> None:
    """The test reads the file as soon as it exists: it must never see it half written."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def alive(pid: int) -> bool:
    """Alive and not a zombie (as conftest.pid_alive)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pool.task
def until_stopped() -> None:
    """Runs until something stops it: a kill, a timeout, a stop of the manager."""
    until_killed()


@pool.task
def ignore_term(ready: str) -> None:
    """The worker itself (the leader of the job's group) shrugs off SIGTERM, noting when
    (wall clock) in ``<ready>.term``."""
    signal.signal(signal.SIGTERM, lambda *_: write_atomically(f"{ready}.term", repr(time.time())))
    write_atomically(ready, str(os.getpid()))
    until_killed()


@pool.task
def alive_pids(pidfile: str) -> list[int]:
    """The pids listed in ``pidfile`` that are alive as this job starts (run behind a job
    whose processes must all be gone before anything else runs in its slot)."""
    pids = [int(p) for p in Path(pidfile).read_text().split()]
    if not pids:
        raise RuntimeError(f"{pidfile} lists no pid")
    return [p for p in pids if alive(p)]


@pool.task
def fork_then_fail(runs: str, pidfile: str, child_seconds: float = 60.0) -> int:
    """First attempt: fork() a child (no exec) that lives on, then fail. Later attempts
    succeed and return the run number."""
    run = record_run(runs)
    if run == 1:
        child = os.fork()
        if child == 0:
            try:  # the forked helper lives on until killed (by itself, at the latest, then)
                signal.alarm(max(1, round(child_seconds)))
                until_killed()
            finally:
                os._exit(0)  # never back into the worker's code it was forked from
        write_atomically(pidfile, str(child))
        raise RuntimeError("first attempt fails")
    return run


@pool.task
def spawn_background(pidfile: str) -> int:
    """Start a background process and return at once, leaving it running."""
    child = subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL)
    write_atomically(pidfile, str(child.pid))
    return child.pid


@pool.task
def exit_after_run(runs: str, code: int) -> None:
    """Count the run, then end the process with ``code`` (no Python clean-up)."""
    record_run(runs)
    os._exit(code)
