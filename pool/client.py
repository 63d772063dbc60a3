"""The Python client: submit jobs and read their status without blocking.

It needs no running manager: a submission is a file written atomically into incoming/
(the manager takes it when it runs), and a status is a file any process can read.
Kill and retry are requests the manager carries out; with no manager running, the
client applies them itself to jobs that are not running. ``Spool`` is made of one part
per concern, each a module of its own:

    finding.py       where a job is, its status, every job's, events, rejections, waiting
    submitting.py    submit a task or a command; the inline fallback; run one to its end
    requesting.py    cancel and retry: requests, or changes made here with no manager
    scheduled.py     schedules: add, list, pause, resume, remove, fire one now
    grouped.py       groups: set a group's limit, list them with their jobs
    housekeeping.py  remove and prune jobs, trim events.jsonl and rejected/
    job.py           ``Job``: a handle on one job
"""

from __future__ import annotations

from .finding import default_spool_path
from .grouped import GroupInfo, Grouping
from .housekeeping import Housekeeping
from .job import Job
from .model import State
from .scheduled import ScheduleInfo, Scheduling

__all__ = ["GroupInfo", "Job", "ScheduleInfo", "Spool", "default_spool_path"]


class Spool(Housekeeping, Scheduling, Grouping):
    """A spool directory seen from a program that submits and watches jobs."""

    def job(self, job_id: str) -> Job:
        """A handle on job ``job_id``; raises JobNotFound if the spool has no such job."""
        handle = Job(self, job_id)
        handle.status()
        return handle

    def jobs(self, state: State | str | None = None) -> list[Job]:
        return [Job(self, s.id) for s in self.statuses(state)]
