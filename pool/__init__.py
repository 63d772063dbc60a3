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
    ManagerRunning,
    NoManagerWarning,
    PoolError,
    SpoolError,
    WaitTimeout,
)
from .model import JobSpec, JobStatus, State
from .progress import progress
from .tasks import task

__all__ = [
    "AmbiguousId",
    "InvalidArgument",
    "InvalidJobSpec",
    "InvalidTransition",
    "Job",
    "JobFailed",
    "JobNotFinished",
    "JobNotFound",
    "JobRejected",
    "JobSpec",
    "JobStatus",
    "ManagerRunning",
    "NoManagerWarning",
    "PoolError",
    "Spool",
    "SpoolError",
    "State",
    "WaitTimeout",
    "progress",
    "task",
]
__version__ = "0.1.0"
