"""``Job``: a handle on one job of a spool; every call reads the spool afresh."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .errors import JobFailed, JobNotFinished
from .model import JobStatus, State
from .safeio import read_all

if TYPE_CHECKING:
    from .requesting import Requesting


class Job:
    """A handle on one job; every call reads the spool afresh."""

    def __init__(self, spool: Requesting, job_id: str) -> None:
        self.spool = spool
        self.id = job_id

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def status(self) -> JobStatus:
        return self.spool.status(self.id)

    def wait(self, timeout: float | None = None) -> JobStatus:
        """Block until the job is final and return its status; raises WaitTimeout."""
        return self.spool.wait([self.id], timeout)[0]

    def result(self) -> Any:
        """The job's return value. Raises JobNotFinished while it is not final, and
        JobFailed when it failed or was cancelled."""
        return result_of(self.status())

    def cancel(self, grace: float | None = None) -> JobStatus:
        return self.spool.cancel(self.id, grace)

    def logs(self) -> str:
        """Everything the job printed so far (every attempt), as text."""
        try:
            fd = self.spool.dir.open_log_to_read(self.id)
        except FileNotFoundError:
            self.status()  # raises JobNotFound for an unknown id
            return ""
        try:
            return read_all(fd, os.fstat(fd).st_size + (1 << 20)).decode(errors="replace")
        finally:
            os.close(fd)


def result_of(status: JobStatus) -> Any:
    """What ``Job.result`` says of a job with this status."""
    if status.state is State.DONE:
        return status.result
    if status.state.is_final:
        why = f": {status.error_text}" if status.error else ""
        raise JobFailed(f"job {status.id!r} {status.state.value}{why}", status)
    raise JobNotFinished(f"job {status.id!r} is {status.state.value}")
