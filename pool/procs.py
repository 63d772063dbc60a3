"""Process control: identities that survive pid reuse, and signals to a job's group.

A job runs in its own process group (its worker is the group leader), so one signal to
the group reaches the job and every child it started, and never another job.
"""

from __future__ import annotations

import os
import signal


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux ``/proc/<pid>/stat``
    field 22), or None when it is gone or the platform has no /proc. A pid plus its start
    time names one process for good, even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rfind(b")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def is_same_process(pid: int | None, started: int | None) -> bool:
    """True when ``pid`` is alive and is the very process that was recorded."""
    if not pid:
        return False
    now = process_start_time(pid)
    if now is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return started is None
    return started is None or now == started


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to a whole process group; False when the group is already gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def describe_exit(exitcode: int | None) -> str:
    """``multiprocessing``'s exit code in words: negative means killed by that signal."""
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name}"
    return f"exited with code {exitcode}"


def open_pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits (Linux 5.3+), or None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def kill_rest_of_group() -> int:
    """SIGKILL every other process in this process's group (what a finished command left
    running in the background); returns how many. Linux only: elsewhere, none."""
    me, group = os.getpid(), os.getpgrp()
    killed = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == group:
            try:
                os.kill(int(entry), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed
