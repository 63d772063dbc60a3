"""The manager: decides every job's fate, and runs it through an executor. One loop for
both ways it runs: the whole spool (`pool serve`, one per spool), or one job with no
manager serving (`pool run`, pool/inline.py), so a change to the loop or to how a job is
stopped is made once.

    watchdog thread --note + wake--> wake pipe --+
    signal handlers --flag + wake--> wake pipe --+--> wait() --> step(ready, now):
    executor (its waitables, or wake) ----------+      outcomes   executor events -> ledger
    requests/ (inline: an inotify descriptor) ---+      deadlines  timeouts, retries due
                                                       stopping   SIGINT/SIGTERM, USR1, USR2
                                                       requests   kill / retry / workers files
                                                       intake     incoming/ -> queued
                                                       schedules  slots due -> jobs
                                                       groups     groups/ -> limits
                                                       dispatch   queued -> executor
                                                       hooks      ended jobs -> --on-finish

The loop blocks with the nearest deadline as its timeout. Every state change goes
through the manager's Ledger, whose hook (``heard``) is the one place that hears them
all: it appends the event, queues a job that became queued, and forgets the requests of
one that became final (or left the spool). Each step is a small module of its own
(outcomes, control, dispatch, recovery, intake); they share a Context, whose clock a test
swaps to step the manager by hand with a fake executor and time standing still.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections import deque
from typing import Any

from .attempt import WorkerConfig
from .clock import Clock, SystemClock
from .context import Context, ManagerConfig
from .control import Control
from .dispatch import Dispatch
from .dropzone import claim_parts
from .engines import EngineSettings, make_executor
from .events import TRIM_PATIENCE
from .executor import Ended, Executor, StopReason
from .finalindex import FinalIndex
from .grouping import Groups
from .hooks import Hooks
from .intake import Intake, IntakeRules
from .joblog import JobLogs
from .ledger import Ledger, Transition
from .lifecycle import Role
from .model import JobStatus, State
from .outcomes import Outcomes
from .pausing import Pausing
from .poller import Poller
from .queuedbook import token_of
from .recovery import Recovery
from .requests import RequestKind
from .reserve import Reserve
from .scheduling import Scheduler
from .spool import Serving, SpoolDir
from .stopping import STOP_SIGNALS, StopMode
from .tasks import load_task_modules, unserved_reason
from .trouble import Trouble
from .waiting import Waiting
from .watch import INCOMING_EVENTS, FolderWatch, WakeHandler, start_observer

log = logging.getLogger(__name__)

INTAKE_SLICE = 0.02  # seconds of intake work per turn, so a big batch never stalls the loop
INDEX_SLICE = 0.01  # seconds of work on status/index.final per turn (pool/finalindex.py)
EVENTS_RETRY = 0.005  # seconds before events whose append found the log held (a worker's append) are tried again

__all__ = ["Manager", "ManagerConfig", "StopMode"]


def engine_settings(config: ManagerConfig, threads: bool = True, name: str = "worker",
                    close_fds: tuple[int, ...] = ()) -> EngineSettings:
    """What the manager's engine is told, from the manager's configuration."""
    worker = WorkerConfig(spool=config.spool, task_modules=config.task_modules, any_task=config.any_task,
                          allow_commands=config.allow_commands,
                          allow_loader_env=config.allow_loader_env, max_log_bytes=config.max_log_bytes,
                          max_checkpoint_bytes=config.max_checkpoint_bytes, durable=config.durable,
                          job_memory=config.job_limits.memory, job_cpu_seconds=config.job_limits.cpu_seconds,
                          job_nice=config.job_limits.nice, job_open_files=config.job_limits.open_files,
                          sys_path=tuple(sys.path), name=name, cwd=os.getcwd(),
                          as_submitter=os.geteuid() == 0 and not config.members_as_root)
    return EngineSettings(worker=worker, workers=config.workers, threads=threads, close_fds=close_fds,
                          broker=config.broker)


class Manager:
    """``only``: the one job an inline manager looks after (None: the whole spool)."""

    def __init__(self, config: ManagerConfig, executor: Executor | None = None, clock: Clock | None = None,
                 only: str | None = None) -> None:
        self.config = config
        self.only = only
        spool = SpoolDir(config.spool, buffer_events=True, durable=config.durable)
        spool.events.max_bytes = config.events_max_bytes
        role = Role.MANAGER if only is None else Role.INLINE
        self.ctx = Context(config, spool, Ledger(spool, role, self.heard), clock or SystemClock(),
                           Trouble(Reserve(spool.top) if only is None else None))
        self.tasks = load_task_modules(config.task_modules)
        self.executor = executor or make_executor(config.engine, engine_settings(config))
        self.dispatch = Dispatch(self.ctx, self.executor)
        self.outcomes = Outcomes(self.ctx, self.dispatch, JobLogs(spool, config.max_log_bytes))
        self.waiting = Waiting(self.ctx, self.dispatch)
        self.control = Control(self.ctx, self.dispatch, Pausing(self.ctx, self.dispatch, self.executor, self.waiting),
                               only, resized=lambda workers: self.tell(workers=workers), compact=self.compact_index)
        self.hooks = None if only is not None else Hooks(self.ctx, config.on_finish, config.hook_timeout,
                                                         as_submitter=os.geteuid() == 0 and not config.members_as_root)
        # pool serve's index of final documents, which `pool status` reads (an inline
        # manager's one job is read from its file).
        self.final_index = None if only is not None else FinalIndex(spool)
        self.indexed: set[str] = set()  # at start: jobs whose line in the index still stands
        self.recovery = Recovery(self.ctx, self.dispatch, self.waiting, self.found_final)
        self.intake = None if only is not None else Intake(self.ctx, IntakeRules(
            task_reason=lambda name: unserved_reason(name, self.tasks, config.task_modules, config.any_task),
            allow_commands=config.allow_commands,
            settle=config.settle,
            max_file_bytes=config.max_file_bytes,
            allow_loader_env=config.allow_loader_env,
            group_gid=config.group_gid,
            capacity=config.capacity,
        ))
        self.scheduler = None if self.intake is None else Scheduler(self.ctx, self.intake.rules.refusal,
                                                                     self.intake.known)
        self.groups = Groups(self.ctx, self.dispatch)
        self.stop_requested = 0
        self.stop_mode: StopMode | None = None  # how, once a stop is asked for (None: interrupt)
        self.interrupts = 0  # SIGINT/SIGTERM: a second one stops running jobs at once
        self.stopping_said: StopMode | None = None
        self.shutdown_at: float | None = None
        self.serving = Serving(kill_grace=config.kill_grace, grace=config.shutdown_grace, workers=config.workers,
                               task_modules=config.task_modules, any_task=config.any_task,
                               durable=config.durable or None)
        self.owner_gone = False  # an Executor's private manager: its owner shut down, or died
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.poller = Poller()
        self.next_rescan = 0.0
        self.rescan_due = True
        self.requests_watch: FolderWatch | None = None  # an inline manager's wake on requests/
        self.incoming_watch: FolderWatch | None = None  # `pool serve`'s direct wake on incoming/
        self.handler = WakeHandler(str(spool.incoming), [str(spool.requests), str(spool.schedules.folder.path),
                                                         str(spool.groups.folder.path)],
                                   self.intake.notes if self.intake else deque(), self.wake)

    @property
    def spool(self) -> SpoolDir:
        return self.ctx.spool

    @property
    def clock(self) -> Clock:
        return self.ctx.clock

    # ------------------------------------------------------------ the hook
    def heard(self, transition: Transition) -> None:
        """Every state change of every job, made here or told by a worker, passes here."""
        self.spool.events.append(transition.event())
        if transition.before is not None or not isinstance(transition.after, State):
            self.spool.queued.moved(transition.job_id)  # it has a file of its own now, or is gone
        if transition.after in (State.QUEUED, State.WAITING) and transition.before is None:
            self.control.arrived(transition.job_id)
        if transition.after is State.QUEUED and transition.status is not None:
            self.dispatch.enqueue(transition.status)
        elif transition.after is State.WAITING and transition.status is not None:
            self.waiting.watch(transition.status)
        elif transition.after.is_final:
            self.dispatch.forget(transition.job_id)
            self.control.finished(transition.job_id)
            self.waiting.ended(transition.job_id)
            if self.hooks is not None:  # a worker tells no status: the job as handed over has its spec
                handed = self.dispatch.handed.get(transition.job_id)
                self.hooks.ended(transition.job_id, transition.status or (handed.status if handed else None))
            if self.final_index is not None and isinstance(transition.after, State):
                self.final_index.note(transition.job_id)

    def being_taken_in(self, record: str) -> bool:
        """Whether the batch of a record is still being taken in, or its claim is still in
        incoming/ (one a dead manager left, not opened yet: its writer still holds it)."""
        token = token_of(record)
        if self.intake is None:
            return False
        return any(batch.token == token for batch in self.intake.batches.values()) or any(
            (claim_parts(entry) or ("",))[0] == token for entry in self.spool.drop.listing()[1])

    def compact_index(self, asked_at: float) -> None:
        if self.final_index is not None:
            self.final_index.compact_soon(asked_at)

    def found_final(self, status: JobStatus) -> None:
        """A job found ended at start: its hook may be due, its line in the index too."""
        if self.hooks is not None:
            self.hooks.recovered(status)
        if self.final_index is not None and status.id not in self.indexed:
            self.final_index.note(status.id)

    # ------------------------------------------------------------ lifecycle of the manager
    def serve(self) -> None:
        """Serve the whole spool until SIGINT/SIGTERM and a clean stop. Raises
        ManagerRunning, SpoolError."""
        self.spool.create(self.config.group_gid, check=True)
        guard = self.spool.lock_manager()
        if os.geteuid() == 0 and self.config.members_as_root:
            log.warning("running as root with --members-as-root: every job runs as root, and so does anything "
                        "a user who can write into %s can submit", self.spool.incoming)
        elif os.geteuid() == 0 and self.config.owner_fd is None:  # not an Executor's: its owner's jobs alone
            log.warning("running as root: a member's job runs as her; jobs of root's own files run as root")
        # incoming/ wakes the loop through a descriptor of its own: watchdog's event
        # crossed two of its threads first (benchmarks/README.md, drop -> start), and its
        # thread spent more CPU than the manager on a stream of files (pool/watch.py).
        self.incoming_watch = FolderWatch.open(str(self.spool.incoming), INCOMING_EVENTS)
        observer = start_observer([*([str(self.spool.incoming)] if self.incoming_watch is None else []),
                                   *self.handler.flags], self.handler)
        try:
            with self.signals(*STOP_SIGNALS):
                self.open()
                self.spool.mark_serving(self.serving)
                log.info("serving %s with %d workers", self.spool.root, self.config.workers)
                self.loop()
        finally:
            observer.stop()
            if self.incoming_watch is not None:
                self.incoming_watch.close()
            self.close()
            observer.join(timeout=5)
            self.spool.clear_serving()
            os.close(guard)
            log.info("stopped")

    def serve_one(self) -> None:
        """Run the one job (``only``) to its end, as `pool serve` would, with no watchdog
        thread (an inline manager forks its worker): SIGTERM stops it as it stops a
        manager; a kill request wakes it through an inotify descriptor on requests/."""
        self.requests_watch = FolderWatch.open(str(self.spool.requests))
        try:
            with self.signals(signal.SIGTERM):
                self.open()
                self.loop()
        finally:
            self.close()
            self.spool.box.drop(RequestKind.KILL, self.only or "")
            if self.requests_watch is not None:
                self.requests_watch.close()

    @contextlib.contextmanager
    def signals(self, *signums: signal.Signals) -> Any:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in signums}
        try:
            yield
        finally:
            for sig, handler_before in previous.items():
                signal.signal(sig, handler_before)

    def open(self) -> None:
        """Pick up where the last manager stopped, and start the workers."""
        if self.ctx.trouble.reserve is not None:
            self.ctx.trouble.reserve.keep()
        if self.hooks is not None:
            self.hooks.open()
        if self.final_index is not None:
            self.indexed = self.final_index.open()
        self.recovery.recover(self.only)
        self.indexed = set()
        self.spool.events.flush()
        self.executor.open(self.wake)

    def close(self) -> None:
        if self.hooks is not None:
            self.hooks.close(0.0 if self.interrupts > 1 else self.config.shutdown_grace)
        self.executor.close(leave_running=self.detaching())
        self.spool.events.flush(patience=TRIM_PATIENCE)  # the last lines: worth waiting out a trim for
        if self.final_index is not None:
            self.final_index.flush()  # the jobs that ended last
            self.final_index.close()

    def loop(self) -> None:
        while not self.finished():
            ready = self.wait_for_wake()
            try:
                self.step(ready)
                self.trouble_over()
            except OSError as exc:  # a full or read-only disk: keep every job, try again
                self.ctx.trouble.hit(exc, self.clock.monotonic(), len(self.outcomes.pending))

    def _on_signal(self, signum: int, frame: object) -> None:
        mode = STOP_SIGNALS.get(signal.Signals(signum), StopMode.INTERRUPT)
        if mode is StopMode.INTERRUPT:
            self.interrupts += 1
        # Detach wins (it is asked for to go now); an interrupt ends a drain; nothing
        # turns an interrupt into a drain.
        if self.stop_mode is None or mode is StopMode.DETACH or (
                mode is StopMode.INTERRUPT and self.stop_mode is StopMode.DRAIN):
            self.stop_mode = mode
        self.stop_requested += 1
        self.wake()

    def detaching(self) -> bool:
        """Stopping now and leaving running attempts to the next manager (when the
        executor's attempts can outlive this manager: else they are interrupted)."""
        return bool(self.stop_requested) and self.stop_mode is StopMode.DETACH and self.executor.leaves_running

    def wake(self) -> None:
        try:
            os.write(self.wake_w, b"!")
        except BlockingIOError:
            pass  # already awake: the pipe is full of wakes

    def finished(self) -> bool:
        # Attempts taken over from a previous manager are not our children: we stop without
        # waiting for them, and the next manager takes them over again.
        if self.detaching():
            return True
        if self.executor.busy():
            return False
        return self.stop_requested > 0 or (self.only is not None and not self.looks_after(self.only)) or (
            self.owner_gone and self.idle() and not self.incoming_left())

    def incoming_left(self) -> bool:
        """Job files in incoming/ not taken in yet: what an Executor's owner submitted
        before it let go (shutdown(wait=False), or its exit) is run all the same."""
        if self.intake is None:
            return False
        if self.intake.due() or self.intake.recheck_at is not None:
            return True
        names, claims = self.spool.drop.listing()
        return bool(names or claims)

    def idle(self) -> bool:
        """Nothing to see to: no job queued, held, waiting for its time or for other jobs,
        running (paused or not), or with an outcome to write. A job held by `pool pause`
        before it started waits for whichever manager serves the spool next."""
        return not (self.dispatch.queue.jobs or self.dispatch.handed or self.dispatch.wait_ends
                    or self.waiting.dependants or self.waiting.busy() or self.outcomes.pending
                    or (self.intake is not None and self.intake.busy()) or self.executor.busy())

    def looks_after(self, job_id: str) -> bool:
        """Whether the job is still ours to see to its end: queued, held, or waiting to
        have its outcome written."""
        return job_id in self.dispatch.queue or self.executor.holds(job_id) or any(
            p.job_id == job_id for p in self.outcomes.pending)

    # ------------------------------------------------------------ the loop
    def wait_for_wake(self) -> list[Any]:
        now = self.clock.monotonic()
        busy = (self.intake is not None and self.intake.busy()) or self.waiting.busy() or (
            self.hooks is not None and self.hooks.busy()) or (self.final_index is not None and self.final_index.due())
        timeout = 0.0 if busy else max(0.0, self.next_deadline(now) - now)
        objects: list[Any] = [self.wake_r, *self.executor.waitables(),
                              *(self.hooks.waitables() if self.hooks is not None else ())]
        objects += [w for w in (self.requests_watch, self.incoming_watch) if w is not None]
        owner = self.config.owner_fd
        if owner is not None and not self.owner_gone:
            objects.append(owner)
        ready = self.poller.wait(objects, timeout)
        if owner is not None and owner in ready:
            self.owner_gone = True  # the owner writes nothing: readable means closed
            self.rescan_due = True  # this turn takes in what it submitted before it closed
            log.info("the owner is gone: stopping once no job is left to see to")
        if self.wake_r in ready:
            try:
                while os.read(self.wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        if self.requests_watch is not None and self.requests_watch in ready and self.requests_watch.names():
            self.handler.flags[str(self.spool.requests)] = True
        if self.incoming_watch is not None and self.incoming_watch in ready:
            self.handler.heard(str(self.spool.incoming), self.incoming_watch.events())
            if self.incoming_watch.overflowed:  # names were lost: the intake lists the folder
                self.incoming_watch.overflowed = False
                self.rescan_due = True
        return ready

    def next_deadline(self, now: float) -> float:
        deadlines = [self.next_rescan, self.dispatch.next_deadline(), self.executor.next_deadline(now),
                     self.outcomes.next_deadline(), self.shutdown_at, self.ctx.trouble.retry_at,
                     self.control.recheck_at]
        if self.scheduler is not None:
            deadlines.append(self.scheduler.next_deadline(now))
        if self.hooks is not None:
            deadlines.append(self.hooks.next_deadline())
        if self.spool.events.lines:  # a flush put off (the log was held a moment): soon, not at the next wake
            deadlines.append(now + EVENTS_RETRY)
        if self.intake is not None and self.intake.recheck_at is not None:
            deadlines.append(now + max(0.0, self.intake.recheck_at - self.clock.time()))
        return min(d for d in deadlines if d is not None)

    def step(self, ready: list[Any] | None = None, now: float | None = None) -> None:
        """One turn of the loop: each named step does its part, in this order. The folders
        are listed only when a file event or the rescan tick says to: a turn woken by a
        worker's reply touches no directory. The turn's events are appended in one write."""
        ready = ready or []
        now = self.clock.monotonic() if now is None else now
        try:
            events = self.executor.collect(ready, now)
            # pool serve --durable: the outcomes the workers wrote are on disk before this
            # manager acts on them (a job after them starts, a retry is counted, an event
            # says so): one sync of status/ for all the turn's.
            self.spool.statuses.sync(force=self.spool.statuses.durable and any(isinstance(e, Ended) for e in events))
            for event in events:
                if isinstance(event, Ended):  # what comes after it is looked at once its end is written
                    self.waiting.ended(event.job_id)
            self.outcomes.take(events, now)
            self.retry_pending(now)
            self.enforce_deadlines(now)
            self.apply_stop(now)
            if self.handler.take_changed(str(self.spool.requests)) or self.rescan_due or (
                    self.control.recheck_at is not None and now >= self.control.recheck_at):
                self.control.apply(now)
            if not self.stop_requested and self.intake is not None and (self.intake.due() or self.rescan_due):
                self.intake.scan(INTAKE_SLICE, full=self.rescan_due)
                if (self.control.recheck_at is not None and now >= self.control.recheck_at) or \
                        self.control.unheard():
                    self.control.apply(now)  # a kill or pause filed before its job came: before dispatch
            if self.scheduler is not None and not self.stop_requested:
                if self.handler.take_changed(str(self.spool.schedules.folder.path)) or self.rescan_due:
                    self.scheduler.look()
                self.scheduler.fire_due()
            self.waiting.settle(now)
            if self.handler.take_changed(str(self.spool.groups.folder.path)) or self.rescan_due:
                self.groups.look()
            # pool serve --durable: what this turn wrote is on disk before a job starts after
            # it, before a hook is told, before the turn's events say so (each a no-op when
            # nothing was written since the last).
            self.spool.statuses.sync()
            if not self.stop_requested:
                self.dispatch.dispatch(now)
            if self.hooks is not None:
                self.spool.statuses.sync()
                self.hooks.step(now)
            self.spool.queued.remove_emptied(self.being_taken_in)
            self.rescan_due = False
            self.say_trouble()
            self.spool.statuses.sync()
        finally:
            # While jobs run, more lines come every turn: the log stays open for them (an
            # inline manager forks its worker, which must inherit no descriptor of ours).
            self.spool.events.flush(keep=self.only is None and self.executor.busy())
            if self.final_index is not None:
                self.final_index.step(self.clock.monotonic() + INDEX_SLICE, self.clock.monotonic,
                                      keep=self.executor.busy())

    def say_stopping(self, mode: StopMode, now: float) -> None:
        running = self.executor.running_ids()
        jobs = f"{len(running)} running" + (f" ({', '.join(running[:10])})" if running else "")
        if mode is StopMode.INTERRUPT:
            self.shutdown_at = now + self.config.shutdown_grace
            log.info("stopping: no new jobs; waiting up to %gs for %s, then they are stopped and queued again",
                     self.config.shutdown_grace, jobs)
        elif mode is StopMode.DRAIN:
            self.shutdown_at = None
            log.info("draining: no new jobs; waiting for %s to end, however long they take", jobs)
        else:
            log.info("detaching: stopping now; %s run on, for the next manager to take over", jobs)
        self.tell(stopping=mode.value)

    def tell(self, **changes: Any) -> None:
        """Say what changed of the manager in manager.json (pool status, stop, workers read it)."""
        self.serving = dataclasses.replace(self.serving, **changes)
        if self.only is None and self.spool.top.has("manager.json"):
            self.spool.say_serving(self.serving)

    def say_trouble(self) -> None:
        """Say in manager.json what keeps jobs from running (pool status shows it), and the
        machines attempts run on (pool workers lists them), when that changes."""
        trouble, hosts = self.executor.trouble(), self.executor.hosts()
        if trouble != self.serving.trouble or hosts != self.serving.hosts:
            self.tell(trouble=trouble, hosts=hosts)

    def retry_pending(self, now: float) -> None:
        """Outcomes that could not be written before (a full disk) are written now."""
        if self.ctx.trouble.due(now):
            self.outcomes.retry_pending(now)

    def trouble_over(self) -> None:
        """After a turn that wrote what had failed before: the spool is writable again."""
        if not self.outcomes.pending and not (self.intake is not None and self.intake.failing):
            self.ctx.trouble.over()

    def enforce_deadlines(self, now: float) -> None:
        for job in self.dispatch.overdue(now):
            log.warning("job %s: timed out after %gs", job.id, job.spec.timeout or 0)
            self.executor.stop(job.id, StopReason.TIMEOUT, self.config.kill_grace, now)
        self.release_due(now)
        self.dispatch.queue.promote(now)
        if now >= self.next_rescan:
            self.rescan_due = True
            self.next_rescan = now + self.config.rescan_interval
            self.recovery.check_supervised()

    def release_due(self, now: float) -> None:
        """Waiting jobs whose time has come are looked at (and queued, if nothing else
        holds them, before this turn's dispatch)."""
        for job_id in self.dispatch.due(now):
            self.waiting.due(job_id)

    def apply_stop(self, now: float) -> None:
        """A stop asked for: take nothing new, and end as its mode says (``StopMode``):
        interrupt gives running jobs the grace, then stops them (they are put back,
        queued, uncounted; a second SIGINT/SIGTERM stops them at once); drain waits for
        them; detach leaves them running."""
        if not self.stop_requested:
            return
        mode = self.stop_mode or StopMode.INTERRUPT
        if mode is StopMode.DETACH and not self.executor.leaves_running:
            log.warning("engine %s cannot leave running jobs to the next manager: stopping them instead",
                        self.config.engine)
            mode = self.stop_mode = StopMode.INTERRUPT
        if mode is not self.stopping_said:
            if self.stopping_said is None:
                self.executor.resize(0)  # nothing more begins, not even what was sent ahead
            self.stopping_said = mode
            self.say_stopping(mode, now)
        at_once = self.interrupts > 1
        if mode is StopMode.INTERRUPT and (at_once or (self.shutdown_at is not None and now >= self.shutdown_at)):
            for job_id in self.executor.running_ids():
                self.executor.stop(job_id, StopReason.SHUTDOWN, 0.0 if at_once else self.config.kill_grace, now)
