"""What an attempt used: CPU time (user, system), peak resident memory and wall time of
the job and everything it started, measured by the process that runs its code; and what
a running job's processes use now, read from /proc (`pool top`).

An attempt is measured with the kernel's own accounting, getrusage(2), taken before and
after it, in the process that runs its code (a worker, a member's runner, a detached
runner):

- CPU: what this process spent meanwhile (a task's code runs in it), plus what every
  process it reaped meanwhile spent (a command, what a task started, what a job left
  behind and the worker, a subreaper, ended and reaped: RUSAGE_CHILDREN counts each with
  all it reaped in turn). A command's figures leave out the worker's own time spent
  copying its output.
- Peak memory: the largest resident set of one process of the job (as ``/usr/bin/time``
  and Slurm's MaxRSS count it, not the sum of them). A worker runs one attempt after
  another, so its own peak would be the largest of any job it ever ran: it is reset at
  the attempt's start by writing 5 to /proc/self/clear_refs (Linux 4.0 and later), and
  a command's own peak comes from wait4(2) on it. What a task started and reaped counts
  when it grew past every process the worker reaped before (RUSAGE_CHILDREN keeps only
  the largest ever).

It costs a few system calls an attempt (benchmarks/README.md). An attempt that is killed
(`pool kill`, its timeout) ends with its worker, which records nothing: `pool top` saw it
while it ran.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from dataclasses import dataclass
from typing import Any

from .procs import stat_fields
from .rules import is_int, is_number

KIB = 1024  # ru_maxrss is in KiB on Linux
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Usage:
    """What one attempt used (seconds, and bytes)."""

    wall: float
    user: float
    system: float
    max_rss: int

    @property
    def cpu(self) -> float:
        return self.user + self.system

    def to_dict(self) -> dict[str, Any]:
        return {"wall": round(self.wall, 6), "user": round(self.user, 6), "system": round(self.system, 6),
                "max_rss": self.max_rss}

    @classmethod
    def from_dict(cls, doc: Any) -> Usage:
        return cls(float(doc["wall"]), float(doc["user"]), float(doc["system"]), int(doc["max_rss"]))


def is_usage(value: object) -> bool:
    """A ``usage`` record of a status: as ``Usage.to_dict`` writes it."""
    return (isinstance(value, dict) and set(value) == {"wall", "user", "system", "max_rss"}
            and all(is_number(value[k]) and 0 <= value[k] < 1e12 for k in ("wall", "user", "system"))
            and is_int(value["max_rss"]) and 0 <= value["max_rss"] < 1 << 62)


class _PeakReset:
    """Makes this process's peak resident set its current one; False where the kernel
    does not let us (the peak then includes what ran before). The file stays open, a
    write each attempt (0.6 us, where opening it again cost 5: benchmarks/usage_cost.py);
    a forked child opens its own, since the parent's names the parent."""

    def __init__(self) -> None:
        self.fd: int | None = None
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

    def __call__(self) -> bool:
        try:
            if self.fd is None:
                self.fd = os.open("/proc/self/clear_refs", os.O_WRONLY | os.O_CLOEXEC)
            os.write(self.fd, b"5")
        except OSError:
            return False
        return True


reset_peak = _PeakReset()


class Meter:
    """Measures one attempt, from its creation to ``read``, in the process that runs it."""

    def __init__(self) -> None:
        reset_peak()
        self.started = time.monotonic()
        self.own = resource.getrusage(resource.RUSAGE_SELF)
        self.children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.reaped_peak = 0  # KiB: the largest process reaped with wait4 and handed over

    def reaped(self, usage: resource.struct_rusage) -> None:
        """A process of the job reaped with wait4 (a command): its own peak counts even
        when an earlier job's process was bigger."""
        self.reaped_peak = max(self.reaped_peak, usage.ru_maxrss)

    def read(self, own_code: bool) -> Usage:
        """What the attempt used so far; ``own_code``: its code ran in this process (a
        task), so this process's own time and peak are the job's too."""
        wall = time.monotonic() - self.started
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        user = children.ru_utime - self.children.ru_utime
        system = children.ru_stime - self.children.ru_stime
        peak = self.reaped_peak
        if children.ru_maxrss > self.children.ru_maxrss:
            peak = max(peak, children.ru_maxrss)
        if own_code:
            own = resource.getrusage(resource.RUSAGE_SELF)
            user += own.ru_utime - self.own.ru_utime
            system += own.ru_stime - self.own.ru_stime
            peak = max(peak, own.ru_maxrss)
        return Usage(wall, max(user, 0.0), max(system, 0.0), peak * KIB)


# ---------------------------------------------------------------- what runs now (pool top)

@dataclass(frozen=True, slots=True)
class Sample:
    """What the processes of one process group use at one moment."""

    at: float  # time.monotonic()
    cpu: float  # seconds of CPU its live processes have spent, all told
    rss: int  # bytes resident, all told


def sample_groups(groups: set[int]) -> dict[int, Sample]:
    """The live processes of each process group in ``groups`` (a running job's: its
    worker leads it), read from /proc/PID/stat; a group with none is left out."""
    cpu: dict[int, float] = {}
    rss: dict[int, int] = {}
    at = time.monotonic()
    for entry in os.listdir("/proc"):
        fields = stat_fields(entry) if entry.isdigit() else None
        if fields is None or len(fields) < 22:
            continue
        group = int(fields[2])  # after the state: ppid, pgrp
        if group in groups:
            cpu[group] = cpu.get(group, 0.0) + (int(fields[11]) + int(fields[12])) / TICKS
            rss[group] = rss.get(group, 0) + int(fields[21]) * PAGE
    return {group: Sample(at, cpu[group], rss[group]) for group in cpu}


def cpu_percent(before: Sample | None, now: Sample) -> float | None:
    """CPU use between two samples of one group, in % of one core (None: too soon to say)."""
    if before is None or now.at - before.at < 0.05:
        return None
    return max(0.0, (now.cpu - before.cpu) / (now.at - before.at) * 100)
