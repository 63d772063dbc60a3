"""pool: background jobs with tracking for one machine, with no broker.

    import pool

    @pool.task
    def render(frame: int) -> dict:
        for i in range(100):
            pool.progress(i + 1, 100)
        return {"frame": frame}

    job = pool.Spool("spool").submit("mytasks:render", 42)
    job.wait(); job.result()
"""

from typing import TYPE_CHECKING, Any

from .errors import (
    AmbiguousId,
    InvalidArgument,
    InvalidJobSpec,
    InvalidTransition,
    JobFailed,
    JobNotFinished,
    JobNotFound,
    JobRejected,
    ManagerLost,
    ManagerRunning,
    NoManagerWarning,
    PoolError,
    SpoolError,
    TaskNotServed,
    WaitTimeout,
)
from .progress import progress  # also a submodule's name: bound here, never replaced by it

if TYPE_CHECKING:
    from .checkpoints import CheckpointError, checkpoint, resume
    from .client import Job, Spool
    from .futures import Executor, JobFuture, RemoteTraceback
    from .model import JobSpec, JobStatus, State
    from .tasks import task

# The rest of the API is imported when first used: a command that needs none of it (`pool
# status --json`, a worker) does not pay for it (benchmarks/README.md, status_listing.py).
_LAZY = {"CheckpointError": "checkpoints", "checkpoint": "checkpoints", "resume": "checkpoints", "Job": "client",
         "Spool": "client", "Executor": "futures", "JobFuture": "futures", "RemoteTraceback": "futures",
         "JobSpec": "model", "JobStatus": "model", "State": "model", "task": "tasks"}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'pool' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{where}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "AmbiguousId",
    "CheckpointError",
    "Executor",
    "InvalidArgument",
    "InvalidJobSpec",
    "InvalidTransition",
    "Job",
    "JobFailed",
    "JobFuture",
    "JobNotFinished",
    "JobNotFound",
    "JobRejected",
    "JobSpec",
    "JobStatus",
    "ManagerLost",
    "ManagerRunning",
    "NoManagerWarning",
    "PoolError",
    "RemoteTraceback",
    "Spool",
    "SpoolError",
    "State",
    "TaskNotServed",
    "WaitTimeout",
    "checkpoint",
    "progress",
    "resume",
    "task",
]
__version__ = "0.1.0"
