"""Process control: identities that survive pid reuse, the one way a job is stopped, and
what a process that runs jobs does to end what they leave behind.

A job runs in its own process group (its worker is the group leader), so one signal to
the group reaches the job and every child it started, and never another job. A job is
stopped only one way (``GroupStop``): SIGTERM to the group, SIGKILL when the grace is
over whatever the leader did meanwhile, and it counts as stopped only once no process
of the group is left.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

DRAIN_POLL = 0.02  # seconds between looks at a group that is being emptied
PR_SET_CHILD_SUBREAPER = 36


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux ``/proc/<pid>/stat``
    field 22), or None when it is gone or the platform has no /proc. A pid plus its start
    time names one process for good, even after the pid is reused."""
    fields = stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None


def stat_fields(pid: int | str) -> list[bytes] | None:
    """/proc/PID/stat's fields after the command name (the state first), or None when
    the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return data[data.rfind(b")") + 2:].split()


def is_same_process(pid: int | None, started: int | None) -> bool:
    """True when ``pid`` is alive and is the very process that was recorded."""
    if not pid:
        return False
    now = process_start_time(pid)
    if now is None:
        return started is None and exists(pid)
    return started is None or now == started


def is_running(pid: int, started: int | None) -> bool:
    """True when ``pid`` is the recorded process and it has not ended (not a zombie)."""
    fields = stat_fields(pid)
    if not fields or fields[0] == b"Z":
        return False
    return is_same_process(pid, started)


def exists(pid: int) -> bool:
    """True while a process has this pid (another user's too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to a whole process group; False when the group is already gone."""
    if pgid <= 1:
        return False  # never the whole system, never init's group
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def group_members(pgid: int, besides: int = 0) -> list[int]:
    """The live (not zombie) processes of group ``pgid``, other than ``besides``."""
    members: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return members
    for entry in entries:
        if entry.isdigit() and int(entry) != besides and _lives_in_group(entry, pgid):
            members.append(int(entry))
    return members


def _lives_in_group(pid: str, pgid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and len(fields) > 2 and fields[0] != b"Z" and fields[2] == str(pgid).encode()


def group_alive(pgid: int) -> bool:
    """True while any live process is left in group ``pgid`` (zombies do not count: the
    leader of a stopped job may be a zombie until its parent reaps it)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # The leader alive answers at once; only once it is gone are all processes looked at.
    return _lives_in_group(str(pgid), pgid) or bool(group_members(pgid))


def leftover_group(pgid: int | None, leader_started: int | None) -> bool:
    """True when the group a job's worker led (``pgid`` = the worker's pid) still has
    live processes: left over by a worker that died, which must be stopped before the
    job runs again. A pid is not reused while it names a group, so members of a group
    whose leader is gone are the job's own; a live leader must be the same process."""
    if not pgid or pgid <= 1 or not group_alive(pgid):
        return False
    if process_start_time(pgid) is None:
        return True
    return is_same_process(pgid, leader_started)


STOP_PATIENCE = 2.0  # seconds a SIGSTOP may take to reach every process of a group (a busy machine)
STOPPED = (b"T", b"t", b"Z")  # stopped, stopped while traced, or dead already


def pause_group(pgid: int) -> bool:
    """SIGSTOP the whole group, and return once every process in it is stopped (a
    signal is only pending until its process is next scheduled: a write already begun
    would land after we return). False when the group is gone, or not every process of it
    stopped in time (it is then continued again: paused means paused whole)."""
    if not signal_group(pgid, signal.SIGSTOP):
        return False
    deadline = time.monotonic() + STOP_PATIENCE
    while time.monotonic() < deadline:
        states = [stat_fields(pid) for pid in [pgid, *group_members(pgid, besides=pgid)]]
        if all(fields is None or fields[0] in STOPPED for fields in states):
            return group_alive(pgid)
        time.sleep(0.001)
    signal_group(pgid, signal.SIGCONT)
    return False


@dataclass
class GroupStop:
    """Stopping one job's process group: TERM now, KILL at ``kill_at``, done when empty."""

    pgid: int
    kill_at: float
    label: str = ""  # whose group, for the log: "job render-42"
    termed: bool = False
    killed: bool = False

    @classmethod
    def begin(cls, pgid: int, grace: float, now: float, label: str = "", paused: bool = False) -> GroupStop:
        """``paused``: the group is stopped (`pool pause`): continued after the SIGTERM,
        so that it can handle it (SIGKILL needs no such help)."""
        stop = cls(pgid, now + grace, label)
        if grace > 0:
            stop.termed = signal_group(pgid, signal.SIGTERM)
            if paused:
                signal_group(pgid, signal.SIGCONT)
        stop.advance(now)
        return stop

    def advance(self, now: float) -> bool:
        """Send SIGKILL once the grace is over; True when the group is gone."""
        if not self.killed and now >= self.kill_at:
            self.killed = True
            if signal_group(self.pgid, signal.SIGKILL) and self.termed:
                log.warning("%s: still running after SIGTERM; sending SIGKILL", self.label or f"group {self.pgid}")
        return not group_alive(self.pgid)

    def next_look(self, now: float) -> float:
        """When to look again: polled, since no event says a group became empty."""
        look = now + DRAIN_POLL
        return look if self.killed else min(self.kill_at, look)


def describe_exit(exitcode: int | None) -> str:
    """An exit code in words (negative: killed by that signal), for any signal number,
    named or not (``sh -c 'kill -40 $$'`` dies of a signal Python has no name for)."""
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        return f"was killed by {signal_name(-exitcode)}"
    return f"exited with code {exitcode}"


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def open_pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits (Linux 5.3+), or None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


# ---------------------------------------------------------------- inside a worker

def become_subreaper() -> bool:
    """Make orphaned descendants (a daemon's double fork) this process's children, so
    what a job leaves behind can be found and ended. Linux 3.4+; False elsewhere."""
    import ctypes  # once per worker: not on every command's way (benchmarks/cli_start.py)

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _has_children() -> bool:
    """Whether any child is left, reaping those that ended: one waitpid(2) when none is
    (the usual), since a subreaper's every leftover descendant is its child."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        except InterruptedError:
            continue
        if pid == 0:
            return True  # a child still runs


def end_rest_of_group(patience: float = 5.0) -> int:
    """SIGKILL every other process of this process's group and every child left (what a
    finished job left running), reap them, and wait until they are gone; returns how
    many were killed. Costs one system call when the job left nothing (the usual). Call
    it only once the job's own children were waited for (it reaps what it finds).

    A process that does not lead its group (a member's attempt, run as her; a task run in
    a process of its own under its limits) ends its own children only: the rest of the
    group is its worker's, who leads it, and ends the rest once that process is gone."""
    if not _has_children():
        return 0
    me, group = os.getpid(), os.getpgrp()
    leads = me == group
    killed = 0
    deadline = time.monotonic() + patience
    while True:
        left = (set(group_members(group, besides=me)) if leads else set()) | set(_children())
        if not left and not _has_children():
            return killed  # every one gone and reaped: no zombie is left to an init that may not reap
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        if time.monotonic() >= deadline:
            return killed
        time.sleep(0.001)


def _children() -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children", "rb") as f:
                found += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return [p for p in found if (fields := stat_fields(p)) and fields[0] != b"Z"]
