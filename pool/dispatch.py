"""Dispatch: queued jobs to the executor, and the deadlines of the attempts it runs.

    hook (a job became waiting) --> held until its time --> (the manager) queued
    hook (a job became queued) --> queue --admissible?--> executor.start(job)
    executor: Began(at) --> timeout_at = at + timeout --> overdue --> stop(TIMEOUT)

``admissible`` is the one predicate that says a queued job may start now; nothing else
decides. A group at its limit (``limits``: groups/, pool/groups.py; every job handed to
the executor counts against its group until its attempt ends, sent ahead or not) is not
open: the queue gives the most urgent job of the open groups, so a full group never
holds back another. A job that declares ``needs`` (memory, CPUs: pool/limits.py) is
admissible only while they fit in the manager's capacity beside the needs of every job
handed over; a job that needs more than is free waits, and smaller ones behind it start
meanwhile (the queue keeps jobs of different needs in lanes of their own). So that a big
job never waits forever behind a stream of small ones, the most urgent job that does not
fit gets a reservation once it has waited ``--reserve-after`` seconds: from then on
nothing starts that would take what it waits for, so running jobs drain until it fits.
A job that needs more than the manager has at all (one accepted by a manager given more)
holds no reservation: it waits for a manager with more.
Sending a busy worker its next job ahead of time is the executor's business: here the
most urgent job is handed over while the executor has room for it (``room(job)``: an
executor takes back jobs of lower priority it sent ahead, to make room). Attempts a previous manager started
and the executor took over (``recovered``) are timed the same way.
"""

from __future__ import annotations

import collections
import heapq
import logging
from collections.abc import Callable
from dataclasses import dataclass

from .context import Context
from .executor import Executor
from .jobqueue import JobQueue
from .limits import Needs
from .model import UNDER_WAY, JobStatus, State, parse_time

NO_NEEDS = Needs()

log = logging.getLogger(__name__)


@dataclass
class Handed:
    """A job the executor holds, and when its attempt must be over."""

    status: JobStatus
    timeout_at: float | None = None
    timed_out: bool = False
    began: bool = False  # its attempt began: no longer merely sent ahead
    paused_at: float | None = None  # paused (`pool pause`): its timeout clock stands still
    paused_before: float = 0.0  # seconds it was paused before this manager took it over


def paused_for(ctx: Context, status: JobStatus) -> float:
    """Seconds the job's current attempt has been paused, by the record its managers kept."""
    if status.state not in UNDER_WAY:
        return 0.0
    pauses = ctx.spool.read_pauses(status.id, status.attempt)
    return pauses.total(ctx.clock.time()) if pauses is not None else 0.0


class Dispatch:
    def __init__(self, ctx: Context, executor: Executor) -> None:
        self.ctx = ctx
        self.executor = executor
        self.queue = JobQueue(load=self.queued_on_disk)
        self.handed: dict[str, Handed] = {}
        self.limits: dict[str, int] = {}  # group -> at most this many handed at once
        self.paused_groups: set[str] = set()  # groups that start nothing (`pool pause --group`)
        self.in_group: collections.Counter[str] = collections.Counter()  # group -> jobs handed
        # Waiting jobs: (the monotonic time their wait ends, id), and each one's latest
        # such time (an entry that no longer matches it is stale: the job was released,
        # cancelled, or held again).
        self.waiting: list[tuple[float, str]] = []
        self.wait_ends: dict[str, float] = {}
        self.capacity = ctx.config.capacity
        self.in_use = NO_NEEDS  # the needs of every job handed over, all told
        self.blocked: tuple[str, float] | None = None  # the most urgent job that does not fit, since when
        self.never_fit: set[str] = set()  # jobs whose needs are more than this manager has: said once each

    def queued_on_disk(self, job_id: str) -> JobStatus | None:
        """A job the queue kept by its place alone, as its file says, while that says
        queued (one that cannot be trusted is set aside, and so forgotten)."""
        status = self.ctx.ledger.trusted(job_id)
        return status if status is not None and status.state is State.QUEUED else None

    def enqueue(self, status: JobStatus, delay: float = 0.0) -> None:
        self.queue.push(status, self.ctx.clock.monotonic(), self.ctx.clock.time(), delay)

    def forget(self, job_id: str) -> None:
        self.queue.remove(job_id)
        self.wait_ends.pop(job_id, None)

    def hold(self, status: JobStatus) -> None:
        """A waiting job: ``due`` tells when its wait ends (its ``waits.until``)."""
        until = status.waits.get("until") if status.waits else None
        wall = parse_time(until).timestamp() if isinstance(until, str) else 0.0
        self.hold_until(status.id, self.ctx.clock.monotonic() + max(0.0, wall - self.ctx.clock.time()))

    def hold_until(self, job_id: str, at: float) -> None:
        """``due`` tells of the job at ``at`` (monotonic)."""
        self.wait_ends[job_id] = at
        heapq.heappush(self.waiting, (at, job_id))

    def due(self, now: float) -> list[str]:
        """Waiting jobs whose wait is over, each told once."""
        ended = []
        while self.waiting and self.waiting[0][0] <= now:
            at, job_id = heapq.heappop(self.waiting)
            if self.wait_ends.get(job_id) == at:
                del self.wait_ends[job_id]
                ended.append(job_id)
        return ended

    def admissible(self, status: JobStatus, reserved: Needs = NO_NEEDS) -> bool:
        """May this queued job start now? Not when handed over already, nor when its
        group is full or paused, nor when its needs do not fit beside those of the jobs
        handed over and what is ``reserved`` for a bigger one. (The queue has already
        waited out its retry.)"""
        return status.id not in self.handed and self.open_group(status.spec.queue_group) and \
            self.fits(status.spec.needs, reserved)

    def fits(self, needs: Needs | None, reserved: Needs = NO_NEEDS) -> bool:
        if needs is None:
            return True
        return (not needs.memory or self.in_use.memory + needs.memory + reserved.memory <= self.capacity.memory) \
            and (not needs.cpus or self.in_use.cpus + needs.cpus + reserved.cpus <= self.capacity.cpus)

    def reservation(self, now: float) -> tuple[str | None, Needs]:
        """The job that holds a reservation, and what it holds (nothing, while the most
        urgent job fits, or has not waited ``--reserve-after`` yet)."""
        first = self.queue.peek(lambda job: self.open_group(job.spec.queue_group) and self.could_fit(job))
        if first is None or self.fits(first.spec.needs):
            self.blocked = None
            return None, NO_NEEDS
        if self.blocked is None or self.blocked[0] != first.id:
            self.blocked = first.id, now
        if now - self.blocked[1] < self.ctx.config.reserve_after:
            return None, NO_NEEDS
        return first.id, first.spec.needs or NO_NEEDS

    def open_group(self, group: str) -> bool:
        limit = self.limits.get(group)
        return group not in self.paused_groups and (limit is None or self.in_group[group] < limit)

    def pause_group(self, group: str) -> None:
        """Start nothing more of the group; what was sent ahead to a busy worker and has
        not begun is taken back (it ends not begun, and waits in the queue, uncounted)."""
        self.paused_groups.add(group)
        for job_id, handed in list(self.handed.items()):
            if handed.status.spec.queue_group == group and not handed.began:
                self.executor.take_back(job_id)

    def could_fit(self, job: JobStatus) -> bool:
        """Whether the job's needs fit in what this manager has at all. One accepted by a
        manager given more (`pool serve --cpus`) waits for such a manager, and holds no
        reservation meanwhile: it would stop every job with needs for good."""
        why = self.capacity.refuses(job.spec.needs) if job.spec.needs is not None else None
        if why is not None and job.id not in self.never_fit:
            self.never_fit.add(job.id)
            log.warning("job %s waits for a manager with more: %s", job.id, why)
        return why is None

    def starter(self, holder: str | None, reserved: Needs) -> Callable[[JobStatus], bool]:
        """Whether the queue may give a job now: an admissible one (beside the reservation,
        unless it is the holder's), or one handed over already, to be dropped."""
        return lambda job: job.id in self.handed or self.admissible(job, NO_NEEDS if job.id == holder else reserved)

    def dispatch(self, now: float) -> None:
        while not self.ctx.trouble.active:
            may_start = self.starter(*self.reservation(now))
            job = self.queue.peek(may_start)
            if job is None or self.executor.room(job) <= 0:
                return
            self.queue.pop(may_start)
            # Handed over already (queued twice): dropped. What holds a job back for later
            # (a full group, needs that do not fit) leaves it in the queue.
            if job.id not in self.handed:
                self.executor.start(self.ctx.spool.attach_env(job), now)
                self._hand(job)

    def _hand(self, status: JobStatus) -> None:
        self.handed[status.id] = Handed(status)
        self.in_group[status.spec.queue_group] += 1
        self.in_use = added(self.in_use, status.spec.needs)

    def recovered(self, status: JobStatus, paused_for: float = 0.0) -> None:
        """The executor took over an attempt a previous manager started (paused for
        ``paused_for`` seconds so far: its timeout counts without them)."""
        self.queue.remove(status.id)
        if status.id not in self.handed:
            self._hand(status)
        handed = self.handed[status.id]
        handed.paused_before = paused_for
        if status.state is State.PAUSED:
            handed.paused_at = self.ctx.clock.monotonic()

    def paused(self, job_id: str, now: float) -> None:
        handed = self.handed.get(job_id)
        if handed is not None and handed.paused_at is None:
            handed.paused_at = now

    def resumed(self, job_id: str, now: float) -> None:
        handed = self.handed.get(job_id)
        if handed is not None and handed.paused_at is not None:
            if handed.timeout_at is not None:
                handed.timeout_at += now - handed.paused_at
            handed.paused_at = None

    # ------------------------------------------------------------ what the executor said
    def attempt_began(self, job_id: str, at: float) -> None:
        handed = self.handed.get(job_id)
        if handed is not None:
            handed.began = True
        if handed is not None and handed.status.spec.timeout:
            handed.timeout_at = at + handed.status.spec.timeout + handed.paused_before

    def ended(self, job_id: str) -> None:
        handed = self.handed.pop(job_id, None)
        if handed is not None:
            self.in_group[handed.status.spec.queue_group] -= 1
            self.in_use = added(self.in_use, handed.status.spec.needs, -1)

    # ------------------------------------------------------------ deadlines
    def overdue(self, now: float) -> list[JobStatus]:
        """Attempts past their timeout, each told once."""
        late = []
        for handed in self.handed.values():
            if handed.timeout_at is not None and now >= handed.timeout_at and not handed.timed_out and \
                    handed.paused_at is None:
                handed.timed_out = True
                late.append(handed.status)
        return late

    def next_deadline(self) -> float | None:
        deadlines = [h.timeout_at for h in self.handed.values()
                     if h.timeout_at is not None and not h.timed_out and h.paused_at is None]
        if self.queue.waiting:
            deadlines.append(self.queue.waiting[0][0])
        if self.waiting:
            deadlines.append(self.waiting[0][0])
        return min(deadlines) if deadlines else None


def added(total: Needs, needs: Needs | None, sign: int = 1) -> Needs:
    if needs is None:
        return total
    return Needs(total.memory + sign * needs.memory, total.cpus + sign * needs.cpus)
