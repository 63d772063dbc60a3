"""The hub's side: an executor (pool/executor.py) whose attempts run on `pool worker`
machines, delivered by Celery over Redis (``pool serve --engine celery --broker URL``).

    manager --start(job)--> CeleryExecutor --attempt record (sent), Celery task--> a worker
            <--Began, Progress, Output, Ended-- a reader thread <--XREADGROUP pool:events--

The manager keeps everything it keeps with local workers: the queue and priorities, the
timeouts, retries, kills, and the spool, which only it writes. It hands out no more
attempts than the live workers have slots for (their announcements), so the broker's
queue stays short and priorities hold. An attempt whose lease is gone without its end
being heard ended with its worker (``WorkerDied``: it counts, and is retried by the
job's rules); one no worker claimed in CLAIM_PATIENCE seconds is taken back (the manager
queues it again, uncounted).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from pool import messages as msg
from pool.engines import EngineSettings
from pool.executor import (
    Began,
    Completed,
    Ended,
    ExecutorEvent,
    Lost,
    NotBegun,
    Outcome,
    Output,
    Progress,
    Start,
    Stopped,
    Stopping,
    StopReason,
    WorkerDied,
    WorkerFailed,
)
from pool.model import JobStatus, State

from . import protocol as p

log = logging.getLogger(__name__)

CLAIM_PATIENCE = 30.0  # seconds a sent attempt may wait for a worker to claim it
LEASE_LOOK_EVERY = 1.0  # seconds between two looks at the running attempts' leases
WORKERS_LOOK_EVERY = 1.0  # seconds between two looks at the workers' announcements
STOP_SLACK = 5.0  # seconds past its grace a stopped attempt's worker has to say it ended


@dataclass
class Sent:
    """An attempt handed to the workers, until its end is heard."""

    token: str
    job: JobStatus
    sent_at: float
    began: bool = False
    host: str | None = None
    outcome: Outcome | None = None  # what its runner's last message said
    stop_reason: StopReason | None = None
    offset: int = 0  # bytes of its output written so far


class CeleryExecutor:
    leaves_running = False

    def __init__(self, settings: EngineSettings) -> None:
        if not settings.broker:
            raise ValueError("the celery engine needs --broker URL (redis://HOST:PORT/DB)")
        self.settings = settings
        self.workers = settings.workers
        self.db = redis.Redis.from_url(settings.broker, socket_timeout=5, socket_connect_timeout=5,
                                       health_check_interval=10, socket_keepalive=True)
        self.app: Any = None
        self.sent: dict[str, Sent] = {}  # by job id
        self.by_token: dict[str, Sent] = {}
        self.events: list[ExecutorEvent] = []
        self.heard: collections.deque[tuple[bytes, dict[bytes, bytes]]] = collections.deque()
        self.stopped = threading.Event()
        self.reader: threading.Thread | None = None
        self.leases_at = 0.0
        self.announced: list[dict[str, Any]] = []
        self.announced_at = -1e9
        self.broker_trouble: str | None = None

    # ------------------------------------------------------------ set up, take down
    def open(self, wake: Callable[[], None]) -> None:
        from celery import Celery

        self.app = Celery("pool", broker=self.settings.broker)
        self.app.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True,
                             broker_transport_options={"socket_timeout": 5, "socket_connect_timeout": 5,
                                                       "socket_keepalive": True})
        try:
            self.db.xgroup_create(p.EVENTS, p.HUB_GROUP, id="$", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self.reader = threading.Thread(target=self._read, args=(wake,), name="pool-hub-reader", daemon=True)
        self.reader.start()

    def close(self, leave_running: bool = False) -> None:
        for job_id in list(self.sent):
            self.stop(job_id, StopReason.SHUTDOWN, 0.0, time.monotonic())
        self.stopped.set()
        if self.reader is not None:
            self.reader.join(5)

    def _read(self, wake: Callable[[], None]) -> None:
        """What the workers say, as it comes: handed to ``collect`` by way of ``wake``."""
        while not self.stopped.is_set():
            try:
                found: Any = self.db.xreadgroup(p.HUB_GROUP, "hub", {p.EVENTS: ">"}, count=1000, block=250)
                self.broker_trouble = None
            except redis.RedisError as exc:
                self.broker_trouble = f"the broker cannot be reached: {exc}"
                self.stopped.wait(0.5)
                continue
            for _, entries in found or ():
                self.heard.extend(entries)
            if found:
                wake()

    # ------------------------------------------------------------ handing out attempts
    def resize(self, workers: int) -> None:
        self.workers = workers

    def live_workers(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        if now - self.announced_at >= WORKERS_LOOK_EVERY:
            self.announced_at = now
            found = []
            try:
                for key in self.db.scan_iter(p.WORKERS_PATTERN, count=1000):
                    data = self.db.get(key)
                    if data:
                        with contextlib.suppress(ValueError):
                            found.append(orjson.loads(data))
            except redis.RedisError:
                return self.announced
            self.announced = [w for w in found if isinstance(w, dict) and isinstance(w.get("slots"), int)]
        return self.announced

    def capable(self, job: JobStatus) -> list[dict[str, Any]]:
        """The live workers that run ``job``: its task's module, or commands."""
        task = job.spec.task
        module = task.partition(":")[0] if task is not None else None
        return [w for w in self.live_workers() if (module is None and w.get("commands")) or
                (module is not None and module in w.get("tasks", ()))]

    def room(self, first: JobStatus) -> int:
        """Slots of the live workers that serve ``first``, less the attempts out to them (and
        never more than ``pool serve --workers`` in all): nothing waits in the broker for a
        slot. With none that serves it, one: ``start`` says why it waits, and the jobs
        behind it go on."""
        out = len(self.sent)
        capable = self.capable(first)
        if not capable:
            return min(1, self.workers - out)
        queue = p.queue_of(first)
        slots: int = sum(w["slots"] for w in capable)
        return min(slots - sum(1 for s in self.sent.values() if p.queue_of(s.job) == queue), self.workers - out)

    def start(self, job: JobStatus, now: float) -> None:
        if not self.capable(job):
            self.events.append(Ended(job.id, job.attempt, NotBegun(State.QUEUED, unserved(job), later=True)))
            return
        token = secrets.token_hex(16)
        key = p.attempt_key(token)
        self.db.hset(key, mapping={"state": "sent", "job": job.id, "attempt": job.attempt})
        self.db.expire(key, p.ATTEMPT_KEEP)
        sent = Sent(token, job, now)
        self.sent[job.id] = self.by_token[token] = sent
        self.app.send_task(p.TASK_NAME, args=[p.attempt_message(token, job)], queue=p.queue_of(job),
                           serializer="json")

    def stop(self, job_id: str, reason: StopReason, grace: float, now: float) -> Stopping | None:
        sent = self.sent.get(job_id)
        if sent is None:
            return None
        if sent.stop_reason is None:
            sent.stop_reason = reason
            said = self.db.eval(p.CANCEL, 1, p.attempt_key(sent.token), reason.value, str(grace))
            if said == b"unstarted":  # it will never begin: the claim fails
                self._end(sent, Stopped(reason, False))
                return Stopping(began=False)
        return Stopping(began=True, kill_at=now + grace)

    def take_back(self, job_id: str) -> bool:
        sent = self.sent.get(job_id)
        if sent is None or sent.began:
            return False
        if self.db.eval(p.CANCEL, 1, p.attempt_key(sent.token), "take-back", "0") != b"unstarted":
            return False
        self._end(sent, NotBegun(State.QUEUED, "taken back before a worker began it"))
        return True

    def pause(self, job_id: str) -> bool:
        return False  # not offered on remote workers yet: the attempt runs on

    def resume(self, job_id: str) -> bool:
        return False

    def recover(self, job: JobStatus, now: float) -> bool:
        if job.state not in (State.RUNNING, State.PAUSED):
            return False  # the manager writes running when an attempt begins: this one never did
        self.events.append(Ended(job.id, job.attempt, Lost("its worker reported to the hub before this one")))
        return True

    def holds(self, job_id: str) -> bool:
        return job_id in self.sent

    def busy(self) -> bool:
        return bool(self.sent)

    def running_ids(self) -> list[str]:
        return list(self.sent)

    def hosts(self) -> list[dict[str, Any]] | None:
        busy = collections.Counter(s.host for s in self.sent.values() if s.began)
        return sorted(({"name": w.get("name"), "slots": w["slots"], "busy": busy[w.get("name")],
                        "tasks": w.get("tasks", []), "commands": bool(w.get("commands"))}
                       for w in self.live_workers()), key=lambda w: str(w["name"]))

    def trouble(self) -> str | None:
        if self.broker_trouble:
            return self.broker_trouble
        return None if self.live_workers() else "no pool worker is connected to the broker"

    def waitables(self) -> list[Any]:
        return []

    def next_deadline(self, now: float) -> float | None:
        return now + LEASE_LOOK_EVERY if self.sent else None

    # ------------------------------------------------------------ what happened
    def collect(self, ready: list[Any], now: float) -> list[ExecutorEvent]:
        done: list[bytes] = []
        while self.heard:
            entry_id, fields = self.heard.popleft()
            done.append(entry_id)
            try:
                self._take(fields, now)
            except Exception:  # one attempt's garbled word never stops the hub
                log.exception("could not take the worker's event %s", entry_id)
        if done:
            try:
                self.db.xack(p.EVENTS, p.HUB_GROUP, *done)
                self.db.xdel(p.EVENTS, *done)
            except redis.RedisError as exc:
                log.warning("could not acknowledge the workers' events (%s)", exc)
        if now - self.leases_at >= LEASE_LOOK_EVERY:
            self.leases_at = now
            self._look_at_leases(now)
        events, self.events = self.events, []
        return events

    def _take(self, fields: dict[bytes, bytes], now: float) -> None:
        sent = self.by_token.get(fields.get(b"token", b"").decode("ascii", "replace"))
        if sent is None:
            return  # an attempt this hub no longer holds (ended, or another hub's)
        kind, data = fields.get(b"kind", b""), fields.get(b"data", b"")
        job = sent.job
        if kind == b"message":
            reply = msg.decode_reply(data)
            if isinstance(reply, msg.Started):
                sent.began = True
                sent.host = fields.get(b"worker", b"").decode("utf-8", "replace") or None
                self.events.append(Began(job.id, job.attempt, now, Start(reply.started_at, None, sent.host)))
            elif isinstance(reply, msg.Progressed):
                self.events.append(Progress(job.id, job.attempt, reply.fraction, reply.message))
            elif isinstance(reply, msg.Ran):
                fraction, message = reply.progress or (None, None)
                sent.outcome = Completed(reply.verdict, Progress(job.id, job.attempt, fraction, message))
            elif isinstance(reply, msg.Broke):
                sent.outcome = WorkerFailed(reply.why, reply.began)
        elif kind == b"log":
            offset = int(fields.get(b"offset", b"0"))
            if offset == sent.offset:  # a piece heard twice is written once
                sent.offset += len(data)
                self.events.append(Output(job.id, job.attempt, data))
        elif kind == b"exit":
            said = orjson.loads(data)
            self._end(sent, self._outcome(sent, said))
        elif kind == b"skipped":
            self._end(sent, NotBegun(None, orjson.loads(data).get("why", "the worker would not run it")))

    def _outcome(self, sent: Sent, said: dict[str, Any]) -> Outcome:
        began = bool(said.get("began")) or sent.began
        if sent.outcome is not None:
            return sent.outcome  # it ended on its own, even while being stopped: that stands
        if sent.stop_reason is not None:
            return Stopped(sent.stop_reason, began)
        how = f"its runner on {sent.host or 'its worker'} {said.get('how')}"
        if said.get("stopped"):
            how += f" (stopped: {said['stopped']})"
        return WorkerDied(how, True) if began else NotBegun(None, how)

    def _look_at_leases(self, now: float) -> None:
        claimed = [s for s in self.sent.values() if s.began or now - s.sent_at >= 1.0]
        if not claimed:
            return
        try:
            with self.db.pipeline(transaction=False) as pipe:
                for sent in claimed:
                    pipe.exists(p.lease_key(sent.token))
                    pipe.hget(p.attempt_key(sent.token), "state")
                answers = pipe.execute()
        except redis.RedisError as exc:
            self.broker_trouble = f"the broker cannot be reached: {exc}"
            return
        for n, sent in enumerate(claimed):
            leased, state = answers[2 * n], answers[2 * n + 1]
            if state == b"running" and not leased:  # its worker stopped it, or is gone: nothing of it runs
                self._end(sent, Stopped(sent.stop_reason, True) if sent.stop_reason is not None else
                          WorkerDied(f"its worker {sent.host or '(unknown)'} was lost: it stopped renewing "
                                     "the attempt's lease", True))
            elif state == b"sent" and now - sent.sent_at >= CLAIM_PATIENCE:
                self.take_back(sent.job.id)
            elif state is None and not sent.began:
                self._end(sent, NotBegun(None, "its record is gone from the broker"))

    def _end(self, sent: Sent, outcome: Outcome) -> None:
        if self.sent.get(sent.job.id) is not sent:
            return
        del self.sent[sent.job.id]
        self.by_token.pop(sent.token, None)
        self.events.append(Ended(sent.job.id, sent.job.attempt, outcome))
        try:
            self.db.delete(p.lease_key(sent.token))
        except redis.RedisError:
            pass


def unserved(job: JobStatus) -> str:
    """Why no worker takes the job: what no `pool worker` connected offers."""
    task = job.spec.task
    if task is None:
        return "waits for a pool worker that runs commands (pool worker --allow-commands): none is connected"
    module = task.partition(":")[0]
    return f"waits for a pool worker that serves task module {module!r} (pool worker --tasks {module}): " \
           "none is connected"
