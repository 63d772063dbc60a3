"""What a job may use (``limits``: the kernel stops it past them) and what it says it
needs (``needs``: the manager starts it only while the needs of what runs fit in what it
was given).

    "limits": {"memory": "2G", "cpu_seconds": 600, "nice": 10, "open_files": 1024}
    "needs":  {"memory": "4G", "cpus": 2}

Limits are rlimits (setrlimit(2)), set in the process that runs the job's code before it
runs: a command's own process (what it starts inherits them, each process on its own),
or, for a task, a process forked from its worker for that attempt, so that a job over its
limit ends and its worker does not. ``memory`` is RLIMIT_DATA (the heap and every private
writable mapping: what a job allocates, counted when it allocates it, whether or not it
touches it), ``cpu_seconds`` RLIMIT_CPU (SIGXCPU, then SIGKILL a second later),
``open_files`` RLIMIT_NOFILE, ``nice`` the scheduling priority (a process may only lower
its own). This machine has no cgroup v2 memory controller (its cgroups are v1), so
nothing here caps a process tree as a whole: see the README.
"""

from __future__ import annotations

import math
import os
import resource
import signal
from dataclasses import dataclass
from typing import Any

from .rules import is_int, is_number

SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
MAX_BYTES = 1 << 50  # a PiB: more is a typo
MAX_CPU_SECONDS = 366 * 86400.0
MAX_OPEN_FILES = 1 << 20
MIN_OPEN_FILES = 16  # fewer and a Python job cannot start
MAX_CPUS = 4096.0
LIMIT_KEYS = ("memory", "cpu_seconds", "nice", "open_files")
NEED_KEYS = ("memory", "cpus")


def parse_size(value: object) -> int | None:
    """``2G``, ``512M``, ``1.5G``, ``64K``, ``2GiB``, ``2GB`` (all powers of 1024) or bytes
    (a number, or its text), as bytes; None when it is none of those, or negative."""
    if isinstance(value, bool):
        return None
    if is_int(value):
        number = float(value)  # type: ignore[arg-type]
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str) and 0 < len(value) <= 32:
        text = value.strip().upper().removesuffix("IB").removesuffix("B")
        unit = text[-1:] if text[-1:] in SIZE_UNITS else ""
        try:
            number = float(text[:-1] if unit else text) * SIZE_UNITS[unit]
        except ValueError:
            return None
    else:
        return None
    if not math.isfinite(number) or number < 0 or number > MAX_BYTES:
        return None
    return int(number)


def size_words(size: float, decimals: int | None = None) -> str:
    """``2 GiB``, ``1.5 GiB``, ``512 MiB``: a limit as a person wrote it; with ``decimals``,
    always that many (``4.1 KiB``, ``212.0 MiB``: a size measured)."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.{decimals}f} {unit}" if decimals is not None else f"{size / scale:.4g} {unit}"
    return f"{size:.0f} B"


def memory_words(limit: int) -> str:
    """Why a job over its memory limit ended."""
    return f"used more than {size_words(limit)} of memory (its limit: limits.memory)"


def cpu_words(limit: float) -> str:
    """Why a job over its CPU limit ended."""
    return f"used more than {limit:g} s of CPU (its limit: limits.cpu_seconds)"


def ended_by_cpu_limit(code: int, cpu_seconds: float | None, used: float | None = None) -> bool:
    """Whether a process that exited with ``code`` (minus a signal) was ended by the
    kernel for passing ``cpu_seconds``: SIGXCPU, or SIGKILL (at the hard limit, a second
    on) after using that much (``used``, when known)."""
    if cpu_seconds is None:
        return False
    return code == -signal.SIGXCPU or (code == -signal.SIGKILL and used is not None and used >= cpu_seconds)


@dataclass(frozen=True, slots=True)
class Limits:
    """What one attempt may use; None: no limit of that kind."""

    memory: int | None = None  # bytes
    cpu_seconds: float | None = None
    nice: int | None = None
    open_files: int | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.memory, self.cpu_seconds, self.nice, self.open_files))

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k in LIMIT_KEYS if (v := getattr(self, k)) is not None}

    @classmethod
    def from_dict(cls, doc: Any) -> Limits:
        """From a document ``limits_problem`` found nothing wrong with."""
        cpu = doc.get("cpu_seconds")
        return cls(parse_size(doc["memory"]) if "memory" in doc else None, float(cpu) if cpu is not None else None,
                   doc.get("nice"), doc.get("open_files"))

    def over(self, defaults: Limits) -> Limits:
        """These limits, with ``defaults`` (the manager's) where they set none."""
        return Limits(**{k: mine if (mine := getattr(self, k)) is not None else getattr(defaults, k)
                         for k in LIMIT_KEYS})


NO_LIMITS = Limits()


def limits_problem(doc: object) -> str | None:
    """Why a ``limits`` object cannot be one, or None."""
    if not isinstance(doc, dict):
        return "must be an object"
    unknown = sorted(set(doc) - set(LIMIT_KEYS))
    if unknown:
        return f"has an unknown key {unknown[0]!r} (it takes {', '.join(LIMIT_KEYS)})"
    if "memory" in doc and (parse_size(doc["memory"]) or 0) < 1 << 20:
        return f"memory must be a size of at least 1M, like 2G or 512M, got {doc['memory']!r}"
    cpu = doc.get("cpu_seconds")
    if cpu is not None and not (is_number(cpu) and 1 <= cpu <= MAX_CPU_SECONDS):
        return f"cpu_seconds must be a number of seconds from 1 to {MAX_CPU_SECONDS:.0f} (a year), got {cpu!r}"
    nice = doc.get("nice")
    if nice is not None and not (is_int(nice) and 0 <= nice <= 19):
        return f"nice must be an integer from 0 to 19, got {nice!r}"
    files = doc.get("open_files")
    if files is not None and not (is_int(files) and MIN_OPEN_FILES <= files <= MAX_OPEN_FILES):
        return f"open_files must be an integer from {MIN_OPEN_FILES} to {MAX_OPEN_FILES}, got {files!r}"
    return None


@dataclass(frozen=True, slots=True)
class Needs:
    """What a job says it needs while it runs: bytes of memory, CPUs (a fraction is one)."""

    memory: int = 0
    cpus: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k in NEED_KEYS if (v := getattr(self, k))}

    @classmethod
    def from_dict(cls, doc: Any) -> Needs:
        """From a document ``needs_problem`` found nothing wrong with."""
        return cls(parse_size(doc["memory"]) or 0 if "memory" in doc else 0, float(doc.get("cpus", 0.0)))


def needs_problem(doc: object) -> str | None:
    """Why a ``needs`` object cannot be one, or None."""
    if not isinstance(doc, dict):
        return "must be an object"
    unknown = sorted(set(doc) - set(NEED_KEYS))
    if unknown:
        return f"has an unknown key {unknown[0]!r} (it takes {', '.join(NEED_KEYS)})"
    if "memory" in doc and parse_size(doc["memory"]) is None:
        return f"memory must be a size like 4G or 512M, got {doc['memory']!r}"
    cpus = doc.get("cpus")
    if cpus is not None and not (is_number(cpus) and 0 <= cpus <= MAX_CPUS):
        return f"cpus must be a number from 0 to {MAX_CPUS:g}, got {cpus!r}"
    return None


@dataclass(frozen=True, slots=True)
class Capacity:
    """What a manager runs jobs' declared needs within (`pool serve --memory --cpus`)."""

    memory: int
    cpus: float

    @classmethod
    def of_machine(cls) -> Capacity:
        return cls(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), float(len(os.sched_getaffinity(0))))

    def refuses(self, needs: Needs) -> str | None:
        """Why a job that needs ``needs`` could never start here, or None."""
        if needs.memory > self.memory:
            return (f"it needs {size_words(needs.memory)} of memory, more than this manager runs jobs in "
                    f"({size_words(self.memory)}: pool serve --memory)")
        if needs.cpus > self.cpus:
            return f"it needs {needs.cpus:g} CPUs, more than this manager has ({self.cpus:g}: pool serve --cpus)"
        return None


def apply(limits: Limits) -> None:
    """Put ``limits`` on this process (what it runs next inherits them). Called in the
    process the job's code runs in, before it runs: a command's child before exec, a
    task's forked process. Raises OSError."""
    if limits.memory is not None:
        resource.setrlimit(resource.RLIMIT_DATA, (limits.memory, limits.memory))
    if limits.cpu_seconds is not None:
        used = resource.getrusage(resource.RUSAGE_SELF)
        soft = math.ceil(used.ru_utime + used.ru_stime + limits.cpu_seconds)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))
    if limits.open_files is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        cap = limits.open_files if hard == resource.RLIM_INFINITY else min(limits.open_files, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (cap, cap))
    if limits.nice is not None:
        now = os.getpriority(os.PRIO_PROCESS, 0)
        if limits.nice > now:
            os.setpriority(os.PRIO_PROCESS, 0, limits.nice)
