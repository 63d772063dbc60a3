"""The manager: one per spool; owns every worker process and every job's fate.

    watchdog thread --note + wake--> wake pipe --+
    signal handlers --flag + wake--> wake pipe --+--> wait() --> reap         (worker replies, dead workers)
    worker pipes  (replies) ---------------------+           --> enforce      (kill grace, timeouts, retries)
    worker sentinels (deaths) -------------------+           --> requests     (kill / retry files)
                                                             --> intake       (incoming/ -> queued)
                                                             --> dispatch     (queued -> idle workers)

The loop blocks in ``multiprocessing.connection.wait`` with the nearest deadline as its
timeout, never polls. Workers are long-lived processes (forkserver: never fork a process
that runs watchdog threads), one job at a time each; a worker whose job is killed, times
out or dies is replaced. The reason for a kill is recorded before the signal is sent, so
a kill is never mistaken for a crash.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

import orjson

from . import lifecycle
from .dropzone import DEFAULT_MAX_FILE_BYTES
from .errors import JobBusy, JobNotFound
from .intake import Intake, IntakeRules
from .jobqueue import JobQueue, Poller
from .model import JobStatus, State, utc_now
from .procs import describe_exit, signal_group
from .recovery import Adopted, recover_statuses
from .spool import SpoolDir
from .tasks import load_task_modules, unserved_reason
from .watch import WakeHandler, start_observer
from .worker import SENT_AHEAD, SENT_NOW, WorkerConfig
from .workers import CANCEL, SHUTDOWN, TIMEOUT, Slot, WorkerProcesses

log = logging.getLogger(__name__)

TROUBLE_RETRY = 1.0  # seconds between tries while the spool cannot be written


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


class Manager:
    def __init__(self, config: ManagerConfig) -> None:
        self.config = config
        self.spool = SpoolDir(config.spool, buffer_events=True)
        self.tasks = load_task_modules(config.task_modules)
        self.intake = Intake(self.spool, IntakeRules(
            task_reason=lambda name: unserved_reason(name, self.tasks, config.task_modules),
            allow_commands=config.allow_commands,
            settle=config.settle,
            max_file_bytes=config.max_file_bytes,
            allow_loader_env=config.allow_loader_env,
            group_gid=config.group_gid,
        ), accept=self.accept)
        self.queue = JobQueue()
        self.adopted: dict[str, Adopted] = {}
        self.stop_requested = 0
        self.shutdown_at: float | None = None
        self.trouble: OSError | None = None
        self.retry_at: float | None = None
        self.unsettled: list[tuple[JobStatus, Any]] = []
        self.cancelled_ahead: set[str] = set()  # jobs sent ahead, then cancelled before they began
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.poller = Poller()
        self.next_rescan = 0.0
        self.rescan_due = True
        self.handler = WakeHandler(str(self.spool.incoming), str(self.spool.requests), self.intake.notes, self.wake)
        self.workers = WorkerProcesses(WorkerConfig(
            spool=str(self.spool.root), task_modules=config.task_modules,
            allow_commands=config.allow_commands, sys_path=tuple(sys.path)))

    # ------------------------------------------------------------ lifecycle of the manager
    def serve(self) -> None:
        """Run until SIGINT/SIGTERM and a clean stop. Raises ManagerRunning, SpoolError."""
        self.spool.create(self.config.group_gid)
        self.spool.check_safe(self.config.group_gid)
        lock_fd = self.spool.lock_manager()
        if os.geteuid() == 0:
            log.warning("running as root: every job runs as root, and so does anything a user who can "
                        "write into %s can submit", self.spool.incoming)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        observer = start_observer([str(self.spool.incoming), str(self.spool.requests)], self.handler)
        try:
            self.recover()
            self.workers.start(self.config.workers)
            self.spool.mark_serving()
            log.info("serving %s with %d workers", self.spool.root, self.config.workers)
            while not self.finished():
                ready = self.wait_for_wake()
                try:
                    self.step(ready)
                except OSError as exc:  # a full or read-only disk: keep every job, try again
                    self.spool_trouble(exc)
        finally:
            observer.stop()
            self.workers.stop()
            observer.join(timeout=5)
            for sig, handler_before in previous.items():
                signal.signal(sig, handler_before)
            self.spool.clear_serving()
            os.close(lock_fd)
            log.info("stopped")

    def spool_trouble(self, exc: OSError) -> None:
        if self.trouble is None:
            log.error("cannot write to the spool (%s); nothing is lost, retrying every %gs until it can",
                      exc, TROUBLE_RETRY)
        self.trouble = exc
        self.retry_at = time.monotonic() + TROUBLE_RETRY

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
        return self.stop_requested > 0 and not self.workers.busy()

    # ------------------------------------------------------------ the loop
    def wait_for_wake(self) -> list[Any]:
        now = time.monotonic()
        deadlines = [self.next_rescan, *(d for s in self.workers.slots for d in (s.timeout_at, s.kill_at) if d)]
        if self.shutdown_at:
            deadlines.append(self.shutdown_at)
        if self.queue.waiting:
            deadlines.append(self.queue.waiting[0][0])
        if self.intake.recheck_at is not None:
            deadlines.append(now + max(0.0, self.intake.recheck_at - time.time()))
        if self.retry_at is not None:
            deadlines.append(self.retry_at)
        deadlines += [a.kill_at for a in self.adopted.values() if a.kill_at is not None]
        timeout = max(0.0, min(deadlines) - now)
        objects: list[Any] = [self.wake_r]
        for slot in self.workers.slots:
            objects += [slot.conn, slot.process.sentinel]
        objects += [a.pidfd for a in self.adopted.values() if a.pidfd is not None]
        ready = self.poller.wait(objects, timeout)
        if self.wake_r in ready:
            try:
                while os.read(self.wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        return ready

    def step(self, ready: list[Any]) -> None:
        """One turn of the loop: each named step does its part, in this order. The folders
        are listed only when a file event or the rescan tick says to: a turn woken by a
        worker's reply touches no directory. The turn's events are appended in one write."""
        try:
            self.settle_pending()
            self.reap(ready)
            self.enforce_deadlines()
            self.apply_stop()
            if self.handler.take_requests_changed() or self.rescan_due:
                self.apply_requests()
            if not self.stop_requested:
                if self.intake.due() or self.rescan_due:
                    self.admit()
                self.dispatch()
            self.rescan_due = False
        finally:
            self.spool.flush_events()

    # ------------------------------------------------------------ reap
    def reap(self, ready: list[Any]) -> None:
        for slot in list(self.workers.slots):
            if slot.conn in ready or slot.process.sentinel in ready:
                self.read_replies(slot)
            if slot.process.sentinel in ready:
                self.bury(slot)
        if any(a.pidfd in ready for a in self.adopted.values()):
            self.check_adopted()

    def read_replies(self, slot: Slot) -> None:
        try:
            while slot.conn.poll():
                self.on_reply(slot, orjson.loads(slot.conn.recv_bytes()))
        except (EOFError, OSError):
            pass  # the worker is gone: its sentinel tells the rest

    def on_reply(self, slot: Slot, reply: dict[str, Any]) -> None:
        job = slot.job
        if job is None or reply.get("id") != job.id:
            return
        slot.job, slot.timeout_at = None, None
        if "state" in reply:
            state = State(reply["state"])
            self.spool.append_event(job.id, State.RUNNING, state, job.attempt, reply.get("reason") or "finished")
            if state is State.QUEUED:
                self.queue.push(JobStatus.from_dict(reply["status"]))
        elif reply.get("skipped") == State.RUNNING.value:
            self.adopt(job.id)  # a worker of a dead manager got to it first: watch that one
        elif "crashed" in reply:
            self.worker_failed(job, reply["crashed"])
        if slot.stopping == CANCEL or "skipped" in reply:
            self.spool.drop_request("kill", job.id)  # it ended on its own first, or never started
        if slot.next is not None and slot.stopping is None:
            # The worker starts the job sent ahead right away. (A worker being stopped
            # keeps it as `next`: whatever the signal cut short is put back by bury.)
            self.begin(slot, slot.next)
            slot.next = None

    def worker_failed(self, job: JobStatus, why: str) -> None:
        """The worker could not run or record the job (say, a full disk): a job it never
        started goes back in the queue for later; a started one has a failed attempt."""
        log.error("job %s: worker error: %s", job.id, why)
        current = self.spool.read_status(job.id)
        if current.state is State.QUEUED:
            self.queue.push(current, delay=TROUBLE_RETRY)
        else:
            failure = lifecycle.error("WorkerError", why)
            self.end_attempt(job, lambda s: lifecycle.fail_attempt(s, failure, utc_now()))

    def bury(self, slot: Slot) -> None:
        """A worker died (killed by us, or crashed): settle its job, start a replacement."""
        slot.process.join()
        self.workers.remove(slot)
        if not self.stop_requested:
            self.workers.start(1)
        if slot.next is not None:
            self.requeue_unstarted(slot.next)
        job = slot.job
        if job is not None:
            how = f"worker process {slot.process.pid} {describe_exit(slot.process.exitcode)}"
            if slot.stopping == CANCEL:
                self.end_attempt(job, lambda s: lifecycle.cancel(s, utc_now()))
                self.spool.drop_request("kill", job.id)
            elif slot.stopping == TIMEOUT:
                self.end_attempt(job, lambda s: lifecycle.time_out(s, utc_now()))
            elif slot.stopping == SHUTDOWN:
                self.end_attempt(job, lambda s: lifecycle.interrupt(s, utc_now()))
            else:
                log.error("job %s: %s", job.id, how)
                died = lifecycle.error("WorkerDied", how)
                self.end_attempt(job, lambda s: lifecycle.fail_attempt(s, died, utc_now()))

    def end_attempt(self, job: JobStatus, change: Any) -> None:
        """Write the outcome of an attempt the worker could not write itself (see
        lifecycle.settle_attempt: a job that got its outcome first keeps it)."""
        try:
            _, status = self.spool.update_status(
                job.id, lambda current: lifecycle.settle_attempt(current, job.attempt, change, utc_now()))
        except JobNotFound:
            return
        except JobBusy:  # a process it left behind still holds its lock: try again soon
            self.unsettled.append((job, change))
            self.retry_at = time.monotonic() + TROUBLE_RETRY
            return
        except OSError as exc:
            self.unsettled.append((job, change))
            self.spool_trouble(exc)
            return
        if status is not None:
            self.spool.append_event(job.id, State.RUNNING, status.state, job.attempt,
                                    status.error["message"] if status.error else "finished")
            if status.state is State.QUEUED:
                self.queue.push(status)

    def settle_pending(self) -> None:
        """Outcomes that could not be written before (a full disk) are written now."""
        if self.retry_at is not None and time.monotonic() < self.retry_at:
            return
        self.retry_at = None
        pending, self.unsettled = self.unsettled, []
        for job, change in pending:
            self.end_attempt(job, change)
        if self.trouble is not None and not self.unsettled:
            log.info("the spool is writable again")
            self.trouble = None

    # ------------------------------------------------------------ deadlines and stopping
    def enforce_deadlines(self) -> None:
        now = time.monotonic()
        for slot in self.workers.slots:
            if slot.kill_at is not None and now >= slot.kill_at:
                slot.kill_at = None
                if slot.job is not None:
                    log.warning("job %s: still running after SIGTERM; sending SIGKILL", slot.job.id)
                signal_group(slot.process.pid, signal.SIGKILL)
            if slot.timeout_at is not None and now >= slot.timeout_at and slot.stopping is None:
                slot.timeout_at = None
                assert slot.job is not None
                log.warning("job %s: timed out after %gs", slot.job.id, slot.job.spec.timeout or 0)
                self.workers.signal(slot, TIMEOUT, self.config.kill_grace)
        self.queue.promote(now)
        kill_due = any(a.kill_at is not None and now >= a.kill_at for a in self.adopted.values())
        if now >= self.next_rescan or kill_due:
            self.rescan_due = now >= self.next_rescan
            self.next_rescan = now + self.config.rescan_interval
            self.check_adopted()

    def apply_stop(self) -> None:
        if not self.stop_requested:
            return
        now = time.monotonic()
        if self.shutdown_at is None:
            self.shutdown_at = now + self.config.shutdown_grace
            log.info("stopping: no new jobs; waiting up to %gs for %d running",
                     self.config.shutdown_grace, len(self.workers.busy()))
        at_once = self.stop_requested > 1
        if at_once or now >= self.shutdown_at:
            for slot in self.workers.busy():
                if slot.stopping is None:
                    self.workers.signal(slot, SHUTDOWN, 0.0 if at_once else self.config.kill_grace)
                elif at_once:
                    slot.kill_at = now
            self.enforce_deadlines()

    # ------------------------------------------------------------ requests
    def apply_requests(self) -> None:
        for kind, job_id, payload in self.spool.pending_requests():
            if kind == "kill":
                self.apply_kill(job_id, float(payload.get("grace", self.config.kill_grace)))
            elif kind == "retry":
                self.apply_retry(job_id)
            else:
                self.spool.drop_request(kind, job_id)

    def apply_kill(self, job_id: str, grace: float) -> None:
        for slot in self.workers.slots:
            if slot.next is not None and slot.next.id == job_id:
                self.cancel_sent_ahead(slot, job_id)
                return
            if slot.job is not None and slot.job.id == job_id:
                if slot.stopping is None:
                    log.info("job %s: cancelling (SIGTERM, SIGKILL after %gs)", job_id, grace)
                    self.workers.signal(slot, CANCEL, grace)
                return  # the request is dropped when the job has ended
        if job_id in self.adopted:
            self.adopted[job_id].kill(grace)
            self.check_adopted()
            return
        self.queue.remove(job_id)
        try:
            _, status = self.spool.update_status(job_id, cancel_if_queued)
        except (JobNotFound, ValueError):
            status = None
        except JobBusy:  # queued on disk, yet a dead manager's worker runs it
            self.adopt(job_id)
            return
        if status is not None:
            self.spool.append_event(job_id, State.QUEUED, State.CANCELLED, status.attempt, "cancelled by request")
        self.spool.drop_request("kill", job_id)

    def cancel_sent_ahead(self, slot: Slot, job_id: str) -> None:
        """Cancel a job waiting in a busy worker: its status says cancelled, which the
        worker checks (under the job's lock) before it would start it."""
        try:
            _, status = self.spool.update_status(job_id, cancel_if_queued)
        except JobBusy:  # the worker is starting it this very moment: kill it as running
            self.handler.requests_changed = True
            return
        except (JobNotFound, ValueError):
            status = None
        if status is not None:
            self.spool.append_event(job_id, State.QUEUED, State.CANCELLED, status.attempt, "cancelled by request")
            self.cancelled_ahead.add(job_id)
        self.spool.drop_request("kill", job_id)

    def apply_retry(self, job_id: str) -> None:
        try:
            before, status = self.spool.update_status(job_id, retry_if_final)
        except (JobNotFound, JobBusy, ValueError):
            status = None
        if status is not None:
            self.spool.append_event(job_id, before.state, State.QUEUED, 1, "retry requested")
            self.queue.push(status)
        # Dropped last: a client waiting on the request then finds the new state.
        self.spool.drop_request("retry", job_id)

    # ------------------------------------------------------------ intake and dispatch
    def admit(self) -> None:
        self.intake.scan()

    def accept(self, status: JobStatus, reason: str) -> None:
        self.spool.append_event(status.id, None, State.QUEUED, 1, reason)
        self.queue.push(status)

    def dispatch(self) -> None:
        """Idle workers get a job; then each busy worker gets its next one ahead of time,
        so it starts the moment the current one ends instead of after a round trip
        through the manager (as ProcessPoolExecutor does). A job sent ahead is committed
        to that worker: a higher priority arriving later waits at most one job."""
        for slot in self.workers.slots:
            if slot.idle:
                job = self.queue.pop()
                if job is None:
                    return
                slot.conn.send_bytes(SENT_NOW + job.encode())
                self.begin(slot, job)
        for slot in self.workers.slots:
            if slot.job is not None and slot.next is None and slot.stopping is None:
                job = self.queue.pop()
                if job is None:
                    return
                slot.conn.send_bytes(SENT_AHEAD + job.encode())
                slot.next = job

    def begin(self, slot: Slot, job: JobStatus) -> None:
        """The worker is running ``job`` from now on (its timeout counts from here)."""
        slot.job = job
        slot.timeout_at = time.monotonic() + job.spec.timeout if job.spec.timeout else None
        if job.id in self.cancelled_ahead:
            self.cancelled_ahead.discard(job.id)  # the worker will skip it: it never runs
            return
        self.spool.append_event(job.id, State.QUEUED, State.RUNNING, job.attempt, f"worker pid {slot.process.pid}")

    def requeue_unstarted(self, job: JobStatus) -> None:
        """A job sent ahead to a worker that died (or that we stopped) before the manager
        saw it start: it waits again, its attempt not counted, since it was not its own
        doing if it had begun."""
        try:
            before, after = self.spool.update_status(
                job.id, lambda s: lifecycle.interrupt(s, utc_now()) if s.state is State.RUNNING else None)
        except (JobNotFound, JobBusy, ValueError):
            return
        if after is not None:
            self.spool.append_event(job.id, State.RUNNING, State.QUEUED, after.attempt, "its worker was stopped")
        current = after or before
        if current.state is State.QUEUED:
            self.queue.push(current)

    # ------------------------------------------------------------ recovery
    def recover(self) -> None:
        """Pick up where a previous manager stopped, however it stopped."""
        self.intake.recover_claims()
        for status, event, alive in recover_statuses(self.spool):
            if event:
                self.spool.append_event(status.id, State.RUNNING, status.state, status.attempt, event)
            if alive:
                self.adopt(status.id)
            elif status.state is State.QUEUED:
                self.queue.push(status)

    def adopt(self, job_id: str) -> None:
        """Watch a job that runs in a process we did not start (a dead manager's worker)."""
        try:
            status = self.spool.read_status(job_id)
        except (JobNotFound, ValueError):
            return
        if not status.state.is_final and job_id not in self.adopted:
            self.adopted[job_id] = Adopted(self.spool, status)
            log.info("job %s: adopted (still running as pid %s)", job_id, status.pid or "not yet known")

    def check_adopted(self) -> None:
        """Adopted jobs are not our children: look at them when their pidfd says they
        ended, when a kill's grace is over, and on each rescan tick."""
        for job_id, adopted in list(self.adopted.items()):
            outcome = adopted.check()
            if outcome is None:
                continue
            adopted.close()
            del self.adopted[job_id]
            self.spool.drop_request("kill", job_id)
            if outcome.state is State.QUEUED:
                self.queue.push(outcome)


def cancel_if_queued(status: JobStatus) -> JobStatus | None:
    return lifecycle.cancel(status, utc_now()) if status.state is State.QUEUED else None


def retry_if_final(status: JobStatus) -> JobStatus | None:
    if status.state in (State.FAILED, State.CANCELLED):
        return lifecycle.retry(status, utc_now())
    return None

