"""The local executor: attempts run in long-lived worker processes on this machine.

    start(job) --RunAttempt--> an idle worker (or, ahead, a busy one: it starts the job
                               the moment its current one ends, with no round trip)
               --TakeBack-->   busy workers, of jobs sent ahead of lower priority than
                               `job`, which goes to the first worker free
    collect()  <--replies, sentinels-- workers --> Began / Recorded / Ended
    recover(job) --> pool/adopted.py: attempts a previous manager's workers run or left

Its workers write each job's status and log in the spool themselves (they hold the job's
lock for the whole attempt, and mark its start in the lock file before its code runs):
the executor tells the manager what they wrote (``Recorded``), and reads the start
marker to say whether an attempt began when its worker could not say it (it died, or
was stopped).

Workers are ``multiprocessing`` processes (forkserver for the manager, which runs watchdog
threads and must never fork; fork for the inline manager, which has no threads), each
the leader of its own process group, one attempt at a time. A stop is ``GroupStop``: the
reason is recorded first, then SIGTERM to the group, SIGKILL after the grace whatever the
leader did, and the slot is free only once the whole group is gone: a program that shrugs
off SIGTERM never runs on beside the next job of its slot.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from . import messages as msg
from .adopted import Adoptions, forget_settled_workers
from .attempt import WorkerConfig
from .executor import (
    Began,
    Completed,
    Ended,
    ExecutorEvent,
    NotBegun,
    Outcome,
    Progress,
    Recorded,
    Stopped,
    Stopping,
    StopReason,
    WorkerDied,
    WorkerFailed,
)
from .importpath import started_from_home
from .model import JobStatus, State
from .procs import GroupStop, describe_exit, is_running, open_pidfd, pause_group, process_start_time, signal_group
from .spool import SpoolDir
from .worker import worker_main

log = logging.getLogger(__name__)

STOP_WAIT = 5.0  # seconds idle workers get to exit once their pipe is closed
# Workers that die before they are ready, one after the other, mean something keeps them
# from starting (a broken install, an import that fails): after this many, each is
# started again only after a wait, twice as long each time, up to RESPAWN_WAIT_MAX.
STARTS_FAILED_TOLERATED = 3
RESPAWN_WAIT_MAX = 60.0


@dataclass
class Slot:
    """One worker process and what the executor knows it is doing."""

    process: Any  # multiprocessing.Process
    conn: Connection
    ready: bool = False  # it said Ready: set up, leading its own process group
    job: JobStatus | None = None  # the attempt it runs
    ahead: JobStatus | None = None  # sent ahead, to begin the moment `job` ends
    taken_back: bool = False  # `ahead` was taken back (its worker may have begun it unheard)
    retiring: bool = False  # one worker too many (`pool workers N`): it ends once its job has
    stop_reason: StopReason | None = None
    stop: GroupStop | None = None  # emptying its process group
    paused: bool = False  # its process group is stopped (`pool pause`)
    dead: bool = False
    broken: bool = False  # its pipe failed: it is dying, and takes nothing more
    started: int | None = None  # its start time: pids are reused
    pidfd: int | None = None  # watched directly once its forkserver is gone
    ended: list[ExecutorEvent] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    @property
    def sentinel(self) -> Any:
        """What becomes readable when the worker ends."""
        return self.pidfd if self.pidfd is not None else self.process.sentinel

    @property
    def live(self) -> bool:
        """Counted among the workers: not dead, dying or retiring."""
        return not self.dead and not self.broken and not self.retiring

    @property
    def idle(self) -> bool:
        return self.live and self.ready and self.job is None and self.stop is None

    @property
    def starting(self) -> bool:
        return self.live and not self.ready

    @property
    def takes_ahead(self) -> bool:
        return self.live and self.job is not None and self.ahead is None and self.stop is None


class LocalExecutor:
    leaves_running = True  # its workers write their jobs' outcomes themselves (adopted.py)

    def __init__(self, config: WorkerConfig, workers: int, start_method: str = "forkserver",
                 preload: tuple[str, ...] = (), close_fds: tuple[int, ...] = ()) -> None:
        self.config = config
        self.spool = SpoolDir(config.spool, durable=config.durable)
        self.adoptions = Adoptions(self.spool)
        self.workers = workers
        self.close_fds = close_fds  # what a forked worker must not keep open
        self.context: Any = multiprocessing.get_context(start_method)
        self.forks = start_method == "fork"
        if start_method == "forkserver":
            # What every worker needs is imported once, in the forkserver, before it forks
            # them; pool.forkserver_group first puts the forkserver in a process group of
            # its own, so a signal to the manager's group does not end it.
            self.context.set_forkserver_preload(["pool.forkserver_group", "pool.worker", *preload])
        self.slots: list[Slot] = []
        # A job of higher priority than jobs sent ahead, which were taken back for it: it
        # goes to the first worker free (sent ahead, it would wait for one chosen blind).
        self.held: JobStatus | None = None
        self.closing = False
        self.events: list[ExecutorEvent] = []
        self.starts_failed = 0  # workers that died before they were ready, one after the other
        self.respawns: list[float] = []  # when to start the workers that wait after such deaths
        self.why_not_starting: str | None = None
        # Dead workers' lock files may be kept (their markers not yet acted on): looked at
        # each turn until none is (the first turn after a start, and after each death).
        self.unsettled = True

    # ------------------------------------------------------------ workers
    def open(self, wake: Callable[[], None]) -> None:
        for _ in range(self.workers):
            self._spawn()

    def _spawn(self) -> None:
        parent, child = self.context.Pipe(duplex=True)
        close_fds = self.close_fds
        if self.forks:
            # A forked worker would hold our ends of its own and its siblings' pipes open,
            # and never see the EOF that tells it to stop.
            close_fds += (parent.fileno(), *(s.conn.fileno() for s in self.slots if not s.conn.closed))
        process = self.context.Process(target=worker_main, args=(child, self.config, close_fds),
                                       name="pool-worker")
        if self.forks:
            process.start()
        else:
            with started_from_home():  # the forkserver, started now if not yet, imports pool itself
                process.start()
        child.close()
        self.slots.append(Slot(process=process, conn=parent, started=process_start_time(process.pid)))

    def close(self, leave_running: bool = False) -> None:
        """Idle workers see EOF and exit. Busy ones are ended, or with ``leave_running``
        finish their job, write its outcome, and exit (the next manager takes them over,
        pool/adopted.py); a job sent ahead to one is taken back first, so none begins."""
        if leave_running:
            self.resize(0)  # what was sent ahead is taken back
        self.closing = True
        for slot in self.slots:
            slot.conn.close()
        deadline = time.monotonic() + STOP_WAIT
        for slot in self.slots:
            if leave_running and (slot.job is not None or slot.stop is not None):
                # Python joins every child process it started when it exits: this one
                # is no longer ours to wait for (multiprocessing has no public way to say so).
                multiprocessing.process._children.discard(slot.process)  # type: ignore[attr-defined]
                continue
            slot.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive() or is_running(slot.pid, slot.started):
                signal_group(slot.pid, signal.SIGKILL)
                slot.process.join(timeout=STOP_WAIT)
            if slot.pidfd is not None:
                os.close(slot.pidfd)
        self.adoptions.close()

    # ------------------------------------------------------------ what the manager asks
    def room(self, first: JobStatus) -> int:
        if self.closing or self.held is not None:
            return 0
        if not any(s.idle for s in self.slots) and self._sent_ahead_below(first):
            return 1  # taken back, for `first`
        return len(self._takers())

    def _sent_ahead_below(self, job: JobStatus) -> list[Slot]:
        return [s for s in self.slots if s.ahead is not None and not s.taken_back and not s.dead
                and not s.broken and s.ahead.spec.priority < job.spec.priority]

    def resize(self, workers: int) -> None:
        """More workers start now; of too many, idle ones end now, busy ones once their
        job ends (nothing is sent ahead to them any more, and what was is taken back).
        0 (a stop): every worker ends with its job."""
        self.workers = workers
        live = [s for s in self.slots if s.live]
        for _ in range(workers - len(live) - len(self.respawns)):
            self._spawn()
        for slot in sorted(live, key=lambda s: s.job is not None)[:max(0, len(live) - workers)]:
            slot.retiring = True
            if slot.ahead is not None and not slot.taken_back:
                self._take_back(slot)
            if slot.job is None:
                slot.conn.close()  # it sees EOF and exits

    def _takers(self) -> list[Slot]:
        """Who may take an attempt now: an idle worker; else, a busy one ahead of time,
        unless a worker is still starting (it will be idle in a moment: a job sent ahead
        would wait behind another however long that one runs)."""
        idle = [s for s in self.slots if s.idle]
        if idle or any(s.starting for s in self.slots):
            return idle
        return [s for s in self.slots if s.takes_ahead]

    def start(self, job: JobStatus, now: float) -> None:
        """An idle worker gets it now; else a busy one gets it ahead of time, so it starts
        the moment the current one ends instead of after a round trip through the manager
        (as ProcessPoolExecutor does). A job of higher priority than jobs sent ahead takes
        them back (each one's worker skips it; it ends NotBegun, queued again) and goes to
        the first worker free: it waits behind nothing of lower priority."""
        if not any(s.idle for s in self.slots):
            below = self._sent_ahead_below(job)
            for slot in below:
                self._take_back(slot)
            if below:
                log.info("job %s (priority %d) goes to the first worker free; taken back for it: %s",
                         job.id, job.spec.priority, ", ".join(s.ahead.id for s in below if s.ahead))
                self.held = job
                return
        candidates = self._takers()
        if not candidates:
            raise RuntimeError("no room for another attempt")
        self._send(candidates[0], job, now)

    def _send(self, slot: Slot, job: JobStatus, now: float) -> None:
        try:
            slot.conn.send_bytes(msg.RunAttempt(job).encode())
        except OSError:  # the worker died a moment ago: its sentinel tells the rest
            self.events.append(Ended(job.id, job.attempt, NotBegun(None, "its worker was gone")))
            slot.broken = True
            return
        if slot.idle:
            self._begin(slot, job, now)
        else:
            slot.ahead = job

    def _take_back(self, slot: Slot) -> None:
        assert slot.ahead is not None
        try:
            slot.conn.send_bytes(msg.TakeBack(slot.ahead.id, slot.ahead.attempt).encode())
        except OSError:
            slot.broken = True  # its sentinel tells the rest; the job sent ahead ends with it
        slot.taken_back = True

    def _give_held(self, slot: Slot, now: float) -> None:
        """A worker is free: the job held for the first one free is its."""
        if self.held is not None and slot.idle:
            job, self.held = self.held, None
            self._send(slot, job, now)

    def _begin(self, slot: Slot, job: JobStatus, now: float) -> None:
        slot.job = job
        self.events.append(Began(job.id, job.attempt, now))

    def stop(self, job_id: str, reason: StopReason, grace: float, now: float) -> Stopping | None:
        for slot in self.slots:
            if slot.job is not None and slot.job.id == job_id:
                if slot.stop is None:
                    slot.stop_reason = reason
                    slot.stop = GroupStop.begin(slot.pid, grace, now, f"job {job_id}", paused=slot.paused)
                elif now + grace < slot.stop.kill_at:
                    slot.stop.kill_at = now + grace  # a second, shorter request hurries it
                return Stopping(began=True, kill_at=slot.stop.kill_at)
            if slot.ahead is not None and slot.ahead.id == job_id:
                # Sent ahead: its worker reads the status before it begins it, and finds it
                # cancelled, once the manager wrote so (if it began it first, the manager
                # hears so and stops it as a running attempt).
                return Stopping(began=False)
        if self.held is not None and self.held.id == job_id:
            # Held for the first worker free, so with none yet: it ends here, and is queued
            # again only if its status still says queued once the stop is written.
            why = f"stopped ({reason.value}) before it was sent to a worker"
            self.events.append(Ended(job_id, self.held.attempt, NotBegun(None, why)))
            self.held = None
            return Stopping(began=False)
        return self.adoptions.stop(job_id, reason, grace, now)

    def take_back(self, job_id: str) -> bool:
        for slot in self.slots:
            if slot.ahead is not None and slot.ahead.id == job_id and not slot.taken_back:
                self._take_back(slot)
                return True
        if self.held is not None and self.held.id == job_id:
            self.events.append(Ended(job_id, self.held.attempt, NotBegun(State.QUEUED, "taken back")))
            self.held = None
            return True
        return False

    def pause(self, job_id: str) -> bool:
        slot = self._running(job_id)
        if slot is None:
            return self.adoptions.pause(job_id)
        slot.paused = slot.paused or pause_group(slot.pid)
        return slot.paused

    def resume(self, job_id: str) -> bool:
        slot = self._running(job_id)
        if slot is None:
            return self.adoptions.resume(job_id)
        if slot.paused:
            slot.paused = False
            signal_group(slot.pid, signal.SIGCONT)
        return True

    def _running(self, job_id: str) -> Slot | None:
        """The worker whose attempt of the job runs (not one it was sent ahead to)."""
        return next((s for s in self.slots if s.job is not None and s.job.id == job_id and s.stop is None
                     and not s.dead), None)

    def recover(self, job: JobStatus, now: float) -> bool:
        return self.adoptions.recover(job, now, self.events)

    def holds(self, job_id: str) -> bool:
        return job_id in self.adoptions.adopted or (self.held is not None and self.held.id == job_id) or any(
            job_id in (s.job.id if s.job else None, s.ahead.id if s.ahead else None) for s in self.slots)

    def running_ids(self) -> list[str]:
        return [s.job.id for s in self.slots if s.job is not None]

    def busy(self) -> bool:
        return any(s.job is not None or s.stop is not None for s in self.slots)

    # ------------------------------------------------------------ what happened
    def waitables(self) -> list[Any]:
        objects: list[Any] = self.adoptions.waitables()
        for slot in self.slots:
            if not slot.dead:
                objects += [slot.sentinel] if slot.conn.closed else [slot.conn, slot.sentinel]
        return objects

    def next_deadline(self, now: float) -> float | None:
        looks = [s.stop.next_look(now) for s in self.slots if s.stop is not None] + self.respawns
        adopted = self.adoptions.next_deadline(now)
        if adopted is not None:
            looks.append(adopted)
        return min(looks) if looks else None

    def collect(self, ready: list[Any], now: float) -> list[ExecutorEvent]:
        if self.unsettled:  # what the last turn told of them is written by now
            self.unsettled = forget_settled_workers(self.spool, self.holds) > 0
        for slot in list(self.slots):
            if not slot.dead and (slot.conn in ready or slot.sentinel in ready):
                self._read_replies(slot, now)
            if not slot.dead and slot.sentinel in ready:
                self._died(slot, now)
            if slot.stop is not None and slot.stop.advance(now) and slot.dead:
                self._bury(slot, now)
        self.adoptions.check(ready, now, self.events)
        due = [at for at in self.respawns if at <= now]
        if due and not self.closing:
            self.respawns = [at for at in self.respawns if at > now]
            for _ in due:
                if sum(s.live for s in self.slots) < self.workers:
                    self._spawn()
        events, self.events = self.events, []
        return events

    def _began(self, job: JobStatus) -> bool:
        """Whether a worker began the job's attempt: its start marker names that very
        attempt (asked when its worker could not say: it died, or was stopped)."""
        return self.spool.locks.began(job.id, job.attempt, job.updated_at) is not None

    def _read_replies(self, slot: Slot, now: float) -> None:
        try:
            # select() on the pipe, not Connection.poll(), which builds a selector each call
            while select.select([slot.conn], [], [], 0)[0]:
                self._on_reply(slot, msg.decode_reply(slot.conn.recv_bytes()), now)
        except (EOFError, OSError, ValueError):
            pass  # the worker is gone: its sentinel tells the rest

    def _on_reply(self, slot: Slot, reply: msg.Reply, now: float) -> None:
        if isinstance(reply, msg.Ready):
            slot.ready = True
            if self.starts_failed:
                log.info("workers start again")
            self.starts_failed = 0
            self.why_not_starting = None
            self._give_held(slot, now)
            self._call_back_ahead(slot)
            return
        if isinstance(reply, msg.Changed):
            self.events.append(Recorded(reply.transitions))
            return
        ahead = slot.ahead
        if isinstance(reply, msg.Skipped) and ahead is not None and slot.taken_back and reply.job_id == ahead.id:
            # Taken back while the attempt before it still runs: its worker answers at once.
            self.events.append(Ended(ahead.id, ahead.attempt, outcome_of(reply)))
            slot.ahead, slot.taken_back = None, False
            return
        job = slot.job
        if isinstance(reply, (msg.Started, msg.Progressed)) or job is None or reply.job_id != job.id:
            log.error("worker %d: unexpected %s for job %s", slot.pid, type(reply).__name__, reply.job_id)
            return
        if isinstance(reply, msg.Ran) and reply.transitions:
            self.events.append(Recorded(reply.transitions))
        outcome = outcome_of(reply)
        if slot.stop is not None:
            # It ended on its own while being stopped: its own outcome stands, but the
            # slot waits for the group (and the worker, signalled) to be gone.
            slot.ended.append(Ended(job.id, job.attempt, outcome))
            return
        self.events.append(Ended(job.id, job.attempt, outcome))
        slot.job, slot.paused = None, False
        if slot.retiring:
            slot.conn.close()  # it exits; a job sent ahead to it is settled when it is gone
        elif slot.ahead is not None:
            # The worker starts it right away (or, taken back, skips it: it ends NotBegun).
            ahead, slot.ahead, slot.taken_back = slot.ahead, None, False
            self._begin(slot, ahead, now)
        else:
            self._give_held(slot, now)
            self._call_back_ahead(slot)

    def _call_back_ahead(self, free: Slot) -> None:
        """A worker is free with nothing held for it: a job sent ahead to a busy worker
        (which may stay busy for hours) is taken back. Its worker answers at once, the
        job is queued again, and the manager hands it to the worker free."""
        if not free.idle or self.closing:
            return
        for slot in self.slots:
            if slot is not free and slot.ahead is not None and not slot.taken_back and slot.job is not None:
                log.debug("job %s: sent ahead to busy worker %d, taken back for worker %d, free",
                          slot.ahead.id, slot.pid, free.pid)
                self._take_back(slot)
                return

    def _died(self, slot: Slot, now: float) -> None:
        slot.process.join()
        if slot.pidfd is None and is_running(slot.pid, slot.started):
            # The forkserver died, and multiprocessing takes its children for dead with
            # it (exit code 255); the worker runs on, its pipe to us intact: watch it
            # directly instead, and let its job finish.
            slot.pidfd = open_pidfd(slot.pid)
            if slot.pidfd is not None:
                log.warning("worker %d: its forkserver is gone; watching it directly", slot.pid)
                return
        slot.dead = True
        slot.conn.close()
        if slot.stop is None:
            if slot.job is not None and not self.closing:
                log.error("job %s: worker process %d %s", slot.job.id, slot.pid, self._how(slot))
            slot.stop = GroupStop.begin(slot.pid, 0.0, now, f"worker {slot.pid}")  # what it left running

    def _how(self, slot: Slot) -> str:
        if slot.pidfd is not None:
            return "ended (its exit status went with its forkserver)"
        return describe_exit(slot.process.exitcode)

    def _bury(self, slot: Slot, now: float) -> None:
        """The worker and everything of its group are gone: settle what it held."""
        self.slots.remove(slot)
        if slot.pidfd is not None:
            os.close(slot.pidfd)
        self.events.extend(slot.ended)
        last = None  # the attempt it began last and did not see through
        if slot.job is not None and not slot.ended:
            began = self._began(slot.job)
            how: Outcome = Stopped(slot.stop_reason, began) if slot.stop_reason else WorkerDied(
                f"worker process {slot.pid} {self._how(slot)}", began)
            self.events.append(Ended(slot.job.id, slot.job.attempt, how))
            last = slot.job.id
        if slot.ahead is not None:
            # Its worker begins it the moment the one before ends: it may have, unheard.
            ahead_began = self._began(slot.ahead)
            ahead: Outcome = WorkerDied("its worker was stopped as the attempt began", True) \
                if ahead_began else NotBegun(None, "its worker was stopped before it began")
            self.events.append(Ended(slot.ahead.id, slot.ahead.attempt, ahead))
            last = slot.ahead.id if ahead_began else last
        self._claim_output(slot, last)
        self.unsettled = True
        if not self.closing and not slot.retiring:
            self._replace(slot, now)

    def _claim_output(self, slot: Slot, last: str | None) -> None:
        """What the worker's last attempt printed and it did not name (it died first) goes
        into that job's log, before the job can run again (pool/worker.py, JobOutput); its
        lock file goes, its marker read (how its attempts ended is told)."""
        try:
            self.spool.bury_worker(slot.pid, slot.started, last)
        except OSError as exc:
            log.error("worker %d: what its last job printed could not be kept (%s)", slot.pid, exc)

    def _replace(self, dead: Slot, now: float) -> None:
        """Start a worker in the place of one that is gone, at once, unless workers keep
        dying before they are ready: then after a wait, never in a tight loop."""
        if dead.ready:
            self.starts_failed = 0
            self.why_not_starting = None
            self._spawn()
            return
        self.starts_failed += 1
        if self.starts_failed < STARTS_FAILED_TOLERATED:
            self._spawn()
            return
        wait = min(2.0 ** (self.starts_failed - STARTS_FAILED_TOLERATED), RESPAWN_WAIT_MAX)
        self.why_not_starting = f"{self.starts_failed} workers in a row {self._how(dead)} before they were ready"
        log.error("workers cannot start: %s (their errors are above); the next starts in %gs",
                  self.why_not_starting, wait)
        self.respawns.append(now + wait)

    def hosts(self) -> list[dict[str, Any]] | None:
        return None  # this machine's own processes

    def trouble(self) -> str | None:
        """Why workers cannot start, while they cannot."""
        return self.why_not_starting


def outcome_of(reply: msg.Ran | msg.Skipped | msg.Broke) -> Outcome:
    """How an attempt ended, as its worker said."""
    if isinstance(reply, msg.Ran):
        if reply.why is None:
            return Completed()  # its worker wrote the outcome
        fraction, message = reply.progress or (None, None)
        return Completed(reply.verdict, Progress(reply.job_id, reply.attempt, fraction, message), reply.why)
    if isinstance(reply, msg.Skipped):
        return NotBegun(reply.state, reply.why, reply.later)
    return WorkerFailed(reply.why, reply.began)
