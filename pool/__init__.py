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

from .checkpoints import CheckpointError, checkpoint, resume
from .client import Job, Spool
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
from .futures import Executor, JobFuture, RemoteTraceback
from .model import JobSpec, JobStatus, State
from .progress import progress
from .tasks import task

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
