"""The job queue: runnable jobs in order (highest priority first, in submission order
within one), and jobs waiting for a retry kept apart until their time. The jobs of each
lane (a group, and what its jobs declared they need) are in a heap of their own, so a
lane that may start nothing now (its group at its limit, its needs more than is free)
never holds back the jobs of another: the next job is the most urgent head of the lanes
that may start one. Jobs of one lane are alike in what may stop them, so when its head
may not start, none behind it could."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from .limits import Needs
from .model import JobStatus, parse_time

Lane = tuple[str, Needs | None]
# Queued jobs past this many are kept by their place alone (~250 bytes, not ~600): a job's
# status is read back from its file when it comes first in its lane. A million jobs of one
# `.jsonl` took the manager to 974 MB when each was kept whole (benchmarks/README.md).
KEEP_WHOLE = 10_000


def lane_of(status: JobStatus) -> Lane:
    return status.spec.queue_group, status.spec.needs


@dataclass
class JobQueue:
    """Queued jobs: highest priority first, FIFO within a priority; retries wait apart."""

    ready: dict[Lane, list[tuple[int, str, int, str]]] = field(default_factory=dict)  # lane -> heap
    waiting: list[tuple[float, int, str]] = field(default_factory=list)
    # Each queued job; None for one kept by its place alone, read back by ``load`` when it
    # is first in its lane (the status as its file has it, or None: no longer queued).
    jobs: dict[str, JobStatus | None] = field(default_factory=dict)
    order: itertools.count[int] = field(default_factory=itertools.count)
    load: Callable[[str], JobStatus | None] = lambda job_id: None

    def push(self, status: JobStatus, now: float, wall: float, delay: float = 0.0) -> None:
        """Queue ``status`` (replacing any copy of it); it waits ``delay`` seconds, or
        until its ``next_try_at``. ``now`` is monotonic, ``wall`` the wall clock."""
        if status.next_try_at:
            delay = max(delay, parse_time(status.next_try_at).timestamp() - wall)
        if delay > 0.001:  # a retry due now, give or take the rounding of its written time
            self.jobs[status.id] = status
            heapq.heappush(self.waiting, (now + delay, next(self.order), status.id))
        else:
            self.jobs[status.id] = status if len(self.jobs) < KEEP_WHOLE else None
            self._ready(status)

    def _ready(self, status: JobStatus) -> None:
        heapq.heappush(self.ready.setdefault(lane_of(status), []), self._place(status))

    def _place(self, status: JobStatus) -> tuple[int, str, int, str]:
        """Highest priority first; within one, in the order jobs were submitted (their
        created_at), whatever order they reached the queue in (a restart, a retry)."""
        return -status.spec.priority, status.created_at, next(self.order), status.id

    def promote(self, now: float) -> float | None:
        """Move retries whose time has come to the ready heap; returns the next such time."""
        while self.waiting and self.waiting[0][0] <= now:
            _, _, job_id = heapq.heappop(self.waiting)
            status = self.jobs.get(job_id)
            if status is not None:  # a waiting job is kept whole
                self._ready(status)
        return self.waiting[0][0] if self.waiting else None

    def peek(self, may_start: Callable[[JobStatus], bool] = lambda job: True) -> JobStatus | None:
        """The job ``pop`` returns next, left in the queue: the most urgent of the lanes'
        heads that ``may_start`` lets start."""
        best: tuple[tuple[int, str, int, str], JobStatus] | None = None
        for lane in list(self.ready):
            found = self._head(lane)
            if found is not None and (best is None or found[0] < best[0]) and may_start(found[1]):
                best = found
        return best[1] if best is not None else None

    def _head(self, lane: Lane) -> tuple[tuple[int, str, int, str], JobStatus] | None:
        """The lane's first entry and its job (read back, if it was kept by its place)."""
        heap = self.ready[lane]
        while heap:
            job_id = heap[0][-1]
            if job_id in self.jobs:
                status = self.jobs[job_id]
                if status is None and (status := self.load(job_id)) is not None and job_id in self.jobs:
                    self.jobs[job_id] = status
                if status is not None and job_id in self.jobs:
                    return heap[0], status
                self.jobs.pop(job_id, None)  # its file no longer says queued: it is not ours to start
            heapq.heappop(heap)  # its job was removed, or taken through another entry
        del self.ready[lane]
        return None

    def pop(self, may_start: Callable[[JobStatus], bool] = lambda job: True) -> JobStatus | None:
        status = self.peek(may_start)
        if status is not None:
            heapq.heappop(self.ready[lane_of(status)])
            del self.jobs[status.id]
        return status

    def remove(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)  # its heap entry is skipped when popped

    def __contains__(self, job_id: str) -> bool:
        return job_id in self.jobs
