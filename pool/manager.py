"""The manager: one per spool; decides every job's fate, and runs it through an executor.

    watchdog thread --note + wake--> wake pipe --+
    signal handlers --flag + wake--> wake pipe --+--> wait() --> step(ready, now):
    executor (worker pipes, sentinels) ----------+      outcomes   executor events -> ledger
    adopted jobs (pidfds) -----------------------+      deadlines  timeouts, retries due
                                                        stopping   SIGINT/SIGTERM
                                                        requests   kill / retry files
                                                        intake     incoming/ -> queued
                                                        dispatch   queued -> executor

The loop blocks with the nearest deadline as its timeout, never polls. Every state
change goes through the manager's Ledger, whose hook (``heard``) is the one place that
hears them all: it appends the event, queues a job that became queued, and forgets the
requests of one that became final. Each step is a small module of its own (outcomes,
control, dispatch, adoption, intake) and the clock is injected, so a test can step the
manager by hand with a fake executor and time standing still.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

from .adoption import Adoption
from .clock import Clock, SystemClock
from .control import Control
from .dispatch import Dispatch
from .dropzone import DEFAULT_MAX_FILE_BYTES
from .events import DEFAULT_MAX_BYTES, TRIM_PATIENCE
from .executor import Executor, LockLiveness, StopReason
from .intake import Intake, IntakeRules
from .jobqueue import Poller
from .ledger import Ledger, Transition
from .lifecycle import Role
from .local import LocalExecutor
from .model import JobStatus, State
from .outcomes import TROUBLE_RETRY, Outcomes
from .reserve import Reserve
from .spool import SpoolDir
from .tasks import load_task_modules, unserved_reason
from .watch import WakeHandler, start_observer
from .worker import WorkerConfig

log = logging.getLogger(__name__)

INTAKE_SLICE = 0.02  # seconds of intake work per turn, so a big batch never stalls the loop


@dataclass(frozen=True)
class ManagerConfig:
    spool: str
    workers: int = os.cpu_count() or 1
    task_modules: tuple[str, ...] = ()
    allow_commands: bool = False
    kill_grace: float = 5.0
    shutdown_grace: float = 10.0
    settle: float = 1.0
    rescan_interval: float = 5.0
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    allow_loader_env: bool = False
    group_gid: int | None = None  # --group: a second group that may submit
    events_max_bytes: int = DEFAULT_MAX_BYTES
    max_log_bytes: int | None = None  # a job's log is cut to its tail past this (pool.joblog)


class Manager:
    def __init__(self, config: ManagerConfig, executor: Executor | None = None, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.spool = SpoolDir(config.spool, buffer_events=True)
        self.spool.events.max_bytes = config.events_max_bytes
        self.tasks = load_task_modules(config.task_modules)
        self.executor: Executor = executor or LocalExecutor(WorkerConfig(
            spool=str(self.spool.root), task_modules=config.task_modules, allow_commands=config.allow_commands,
            allow_loader_env=config.allow_loader_env, max_log_bytes=config.max_log_bytes,
            sys_path=tuple(sys.path)), config.workers,
            preload=config.task_modules)
        self.ledger = Ledger(self.spool, Role.MANAGER, self.heard)
        self.dispatch = Dispatch(self.executor, self.clock)
        self.adoption = Adoption(self.spool, self.ledger, LockLiveness(self.spool), self.clock, config.kill_grace,
                                 self.dispatch.enqueue)
        self.outcomes = Outcomes(self.spool, self.ledger, self.dispatch, self.clock, self.adoption.adopt,
                                 self.spool_trouble)
        self.control = Control(self.spool, self.ledger, self.dispatch, self.executor, self.clock,
                               config.kill_grace, config.group_gid, self.adoption.stop)
        self.intake = Intake(self.spool, IntakeRules(
            task_reason=lambda name: unserved_reason(name, self.tasks, config.task_modules),
            allow_commands=config.allow_commands,
            settle=config.settle,
            max_file_bytes=config.max_file_bytes,
            allow_loader_env=config.allow_loader_env,
            group_gid=config.group_gid,
        ), self.clock, accept=self.accept)
        self.reserve = Reserve(self.spool.top)
        self.stop_requested = 0
        self.shutdown_at: float | None = None
        self.trouble: OSError | None = None
        self.trouble_until: float | None = None
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.poller = Poller()
        self.next_rescan = 0.0
        self.rescan_due = True
        self.handler = WakeHandler(str(self.spool.incoming), str(self.spool.requests), self.intake.notes, self.wake)

    # ------------------------------------------------------------ the hook
    def heard(self, transition: Transition) -> None:
        """Every state change of every job, made here or told by a worker, passes here."""
        self.spool.events.append(transition.event())
        if transition.after is State.QUEUED and transition.status is not None:
            self.dispatch.enqueue(transition.status)
        elif transition.after.is_final:
            self.dispatch.forget(transition.job_id)
            self.control.finished(transition.job_id)

    def accept(self, status: JobStatus, reason: str) -> None:
        self.ledger.create(status, reason)
        self.control.arrived(status.id)

    # ------------------------------------------------------------ lifecycle of the manager
    def serve(self) -> None:
        """Run until SIGINT/SIGTERM and a clean stop. Raises ManagerRunning, SpoolError."""
        self.spool.create(self.config.group_gid, check=True)
        guard = self.spool.lock_manager()
        if os.geteuid() == 0:
            log.warning("running as root: every job runs as root, and so does anything a user who can "
                        "write into %s can submit", self.spool.incoming)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        observer = start_observer([str(self.spool.incoming), str(self.spool.requests)], self.handler)
        try:
            self.open()
            self.spool.mark_serving()
            log.info("serving %s with %d workers", self.spool.root, self.config.workers)
            while not self.finished():
                ready = self.wait_for_wake()
                try:
                    self.step(ready)
                    self.trouble_over()
                except OSError as exc:  # a full or read-only disk: keep every job, try again
                    self.spool_trouble(exc)
        finally:
            observer.stop()
            self.executor.close()
            self.adoption.close()
            observer.join(timeout=5)
            for sig, handler_before in previous.items():
                signal.signal(sig, handler_before)
            self.spool.events.flush(patience=TRIM_PATIENCE)  # the last lines: worth waiting out a trim for
            self.spool.clear_serving()
            os.close(guard)
            log.info("stopped")

    def open(self) -> None:
        """Pick up where the last manager stopped, and start the workers."""
        self.reserve.keep()
        self.adoption.recover()
        self.spool.events.flush()
        self.executor.open()

    def spool_trouble(self, exc: OSError) -> None:
        if self.trouble is None:
            log.error("cannot write to the spool (%s); nothing is lost, retrying every %gs until it can",
                      exc, TROUBLE_RETRY)
        self.trouble = exc
        self.trouble_until = self.clock.monotonic() + TROUBLE_RETRY
        self.dispatch.paused = True
        if exc.errno in (errno.ENOSPC, errno.EDQUOT) and self.outcomes.pending and self.reserve.release():
            log.warning("let the spool's reserve of disk space go, to record %d outcome(s)", len(self.outcomes.pending))
            self.trouble_until = self.clock.monotonic()  # try again at once

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stop_requested += 1
        self.wake()

    def wake(self) -> None:
        try:
            os.write(self.wake_w, b"!")
        except BlockingIOError:
            pass  # already awake: the pipe is full of wakes

    def finished(self) -> bool:
        # Adopted jobs are not our children: we stop without waiting for them, and the
        # next manager adopts them again.
        return self.stop_requested > 0 and not self.executor.busy()

    # ------------------------------------------------------------ the loop
    def wait_for_wake(self) -> list[Any]:
        now = self.clock.monotonic()
        timeout = 0.0 if self.intake.busy() else max(0.0, self.next_deadline(now) - now)
        objects: list[Any] = [self.wake_r, *self.executor.waitables(), *self.adoption.waitables()]
        ready = self.poller.wait(objects, timeout)
        if self.wake_r in ready:
            try:
                while os.read(self.wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        return ready

    def next_deadline(self, now: float) -> float:
        deadlines = [self.next_rescan, self.dispatch.next_deadline(), self.executor.next_deadline(now),
                     self.adoption.next_deadline(now), self.outcomes.next_deadline(), self.shutdown_at,
                     self.trouble_until, self.control.recheck_at]
        if self.intake.recheck_at is not None:
            deadlines.append(now + max(0.0, self.intake.recheck_at - self.clock.time()))
        return min(d for d in deadlines if d is not None)

    def step(self, ready: list[Any] | None = None, now: float | None = None) -> None:
        """One turn of the loop: each named step does its part, in this order. The folders
        are listed only when a file event or the rescan tick says to: a turn woken by a
        worker's reply touches no directory. The turn's events are appended in one write."""
        ready = ready or []
        now = self.clock.monotonic() if now is None else now
        try:
            self.outcomes.take(self.executor.collect(ready, now), now)
            self.retry_pending(now)
            self.enforce_deadlines(ready, now)
            self.apply_stop(now)
            if self.handler.take_requests_changed() or self.rescan_due or (
                    self.control.recheck_at is not None and now >= self.control.recheck_at):
                self.control.apply(now)
            if not self.stop_requested:
                if self.intake.due() or self.rescan_due:
                    self.intake.scan(INTAKE_SLICE)
                self.dispatch.dispatch(now)
            self.rescan_due = False
        finally:
            self.spool.events.flush()

    def retry_pending(self, now: float) -> None:
        """Outcomes that could not be written before (a full disk) are written now."""
        if self.trouble_until is not None and now < self.trouble_until:
            return
        self.trouble_until = None
        self.outcomes.retry_pending(now)

    def trouble_over(self) -> None:
        """After a turn that wrote what had failed before: the spool is writable again."""
        if self.trouble is not None and self.trouble_until is None and not self.outcomes.pending \
                and not self.intake.failing:
            log.info("the spool is writable again")
            self.trouble = None
            self.dispatch.paused = False
            self.reserve.keep()

    def enforce_deadlines(self, ready: list[Any], now: float) -> None:
        for job in self.dispatch.overdue(now):
            log.warning("job %s: timed out after %gs", job.id, job.spec.timeout or 0)
            self.executor.stop(job.id, StopReason.TIMEOUT, self.config.kill_grace, now)
        self.dispatch.queue.promote(now)
        tick = now >= self.next_rescan
        if tick:
            self.rescan_due = True
            self.next_rescan = now + self.config.rescan_interval
        self.adoption.check(ready, now, every=tick)

    def apply_stop(self, now: float) -> None:
        """SIGINT/SIGTERM: take nothing new, give running jobs the grace, then stop them
        (they are put back, queued, uncounted); a second signal stops them at once."""
        if not self.stop_requested:
            return
        if self.shutdown_at is None:
            self.shutdown_at = now + self.config.shutdown_grace
            log.info("stopping: no new jobs; waiting up to %gs for %d running",
                     self.config.shutdown_grace, len(self.executor.running_ids()))
        at_once = self.stop_requested > 1
        if at_once or now >= self.shutdown_at:
            for job_id in self.executor.running_ids():
                self.executor.stop(job_id, StopReason.SHUTDOWN, 0.0 if at_once else self.config.kill_grace, now)
