"""The manager's two small machines: the job queue and the poller it blocks in.

JobQueue orders runnable jobs (highest priority first, in submission order within one) and keeps jobs
waiting for a retry apart until their time; Poller is what the manager waits in: every
worker's pipe and sentinel, adopted jobs' pidfds, and the wake-up pipe.
"""

from __future__ import annotations

import heapq
import itertools
import select
from dataclasses import dataclass, field
from typing import Any

from .model import JobStatus, parse_time


@dataclass
class JobQueue:
    """Queued jobs: highest priority first, FIFO within a priority; retries wait apart."""

    ready: list[tuple[int, str, int, str]] = field(default_factory=list)
    waiting: list[tuple[float, int, str]] = field(default_factory=list)
    jobs: dict[str, JobStatus] = field(default_factory=dict)
    order: itertools.count[int] = field(default_factory=itertools.count)

    def push(self, status: JobStatus, now: float, wall: float, delay: float = 0.0) -> None:
        """Queue ``status`` (replacing any copy of it); it waits ``delay`` seconds, or
        until its ``next_try_at``. ``now`` is monotonic, ``wall`` the wall clock."""
        self.jobs[status.id] = status
        if status.next_try_at:
            delay = max(delay, parse_time(status.next_try_at).timestamp() - wall)
        if delay > 0.001:  # a retry due now, give or take the rounding of its written time
            heapq.heappush(self.waiting, (now + delay, next(self.order), status.id))
        else:
            heapq.heappush(self.ready, self._place(status))

    def _place(self, status: JobStatus) -> tuple[int, str, int, str]:
        """Highest priority first; within one, in the order jobs were submitted (their
        created_at), whatever order they reached the queue in (a restart, a retry)."""
        return -status.spec.priority, status.created_at, next(self.order), status.id

    def promote(self, now: float) -> float | None:
        """Move retries whose time has come to the ready heap; returns the next such time."""
        while self.waiting and self.waiting[0][0] <= now:
            _, _, job_id = heapq.heappop(self.waiting)
            if job_id in self.jobs:
                heapq.heappush(self.ready, self._place(self.jobs[job_id]))
        return self.waiting[0][0] if self.waiting else None

    def pop(self) -> JobStatus | None:
        while self.ready:
            *_, job_id = heapq.heappop(self.ready)
            status = self.jobs.pop(job_id, None)
            if status is not None:
                return status
        return None

    def remove(self, job_id: str) -> JobStatus | None:
        return self.jobs.pop(job_id, None)  # its heap entry is skipped when popped

    def __contains__(self, job_id: str) -> bool:
        return job_id in self.jobs


class Poller:
    """``multiprocessing.connection.wait`` without building a new selector each call: the
    registered set changes only when a worker is replaced or a job adopted."""

    def __init__(self) -> None:
        self.poll = select.poll()
        self.by_fd: dict[int, Any] = {}

    def wait(self, objects: list[Any], timeout: float) -> list[Any]:
        wanted = {obj if isinstance(obj, int) else obj.fileno(): obj for obj in objects}
        if wanted.keys() != self.by_fd.keys():
            for fd in self.by_fd.keys() - wanted.keys():
                self.poll.unregister(fd)
            for fd in wanted.keys() - self.by_fd.keys():
                self.poll.register(fd, select.POLLIN)
        self.by_fd = wanted
        events = self.poll.poll(min(timeout, 3600.0) * 1000)
        return [self.by_fd[fd] for fd, _ in events if fd in self.by_fd]
