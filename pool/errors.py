"""Every error pool raises on purpose.

Each one also subclasses the nearest built-in, so callers that only know Python's
exceptions still catch them sensibly. Only ``cli/`` turns these into exit codes.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import BrokenExecutor


class PoolError(Exception):
    """Base class of every error pool raises on purpose."""


class InvalidJobSpec(PoolError, ValueError):
    """A job file or a submitted job does not follow the job format."""


class InvalidArgument(PoolError, ValueError):
    """A value pool was given that is not one it takes, other than a job's own keys: a
    kill's grace, a fallback, an engine's name."""


class CorruptStatus(PoolError, ValueError):
    """A status document that is not one pool could have written (wrong types, not
    JSON, not an object): the job it belongs to is set aside, never trusted."""


class JobNotFound(PoolError, LookupError):
    """No job with that id exists in the spool."""


class AmbiguousId(JobNotFound):
    """An id prefix that more than one job's id starts with."""


class JobRejected(JobNotFound):
    """The job's file was refused at intake (it is in rejected/); ``reason`` says why."""

    def __init__(self, job_id: str, reason: str) -> None:
        said = f"job {job_id!r} in "  # the reason names the job too: said once
        super().__init__(f"job {job_id!r} was rejected: {reason.removeprefix(said)}")
        self.reason = reason


class ScheduleNotFound(PoolError, LookupError):
    """No schedule of that name exists in the spool."""


class JobBusy(PoolError, TimeoutError):
    """The job's lock is held by the worker running it; try again, or ask the manager."""


class InvalidTransition(PoolError, RuntimeError):
    """A state change that the lifecycle table does not allow."""


class LateWrite(InvalidTransition):
    """A write for an attempt that has ended (its writer let the job's lock go): refused,
    so nothing can be written over the attempt's outcome."""


class ManagerRunning(PoolError, RuntimeError):
    """Another manager already serves the spool."""

    def __init__(self, spool: str, pid: int | None) -> None:
        who = f"pid {pid}" if pid else "unknown pid"
        super().__init__(f"a manager is already serving {spool} ({who})")
        self.pid = pid


class SpoolError(PoolError, OSError):
    """The spool directory cannot be used (missing, unsafe permissions, unwritable)."""


class JobNotFinished(PoolError, RuntimeError):
    """The job has no result yet because it is not in a final state."""


class JobFailed(PoolError, RuntimeError):
    """The job ended ``failed`` or ``cancelled``; ``status`` holds the details, and
    ``error_type`` and ``error_message`` what its error says (``pool.Executor``: the
    exception a job raised, when its class cannot be had here)."""

    def __init__(self, message: str, status: object) -> None:
        super().__init__(message)
        self.status = status

    @property
    def error_type(self) -> str | None:
        error = getattr(self.status, "error", None)
        return error.get("type") if isinstance(error, Mapping) else None

    @property
    def error_message(self) -> str | None:
        error = getattr(self.status, "error", None)
        return error.get("message") if isinstance(error, Mapping) else None


class ManagerLost(PoolError, BrokenExecutor):
    """An Executor's private manager ended before the job did: the future can never be
    told its end (the job is still in the spool: a manager started later runs it)."""


class TaskNotServed(PoolError, TypeError):
    """A function the manager serving the spool would refuse to run (``pool serve
    --tasks``), or one no worker could import (a lambda, a method, a nested function)."""


class WaitTimeout(PoolError, TimeoutError):
    """A wait for jobs to finish ran out of time."""


class NoManagerWarning(UserWarning):
    """A job was submitted to (or is waited for in) a spool no manager serves: it waits
    until `pool serve` runs (``fallback="inline"`` runs it at once instead)."""
