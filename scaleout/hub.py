"""The hub's side: an executor (pool/executor.py) whose attempts run on `pool worker`
machines, delivered by Celery over Redis (``pool serve --engine celery --broker URL``).

    manager --start(job)--> CeleryExecutor --attempt record (sent), Celery task--> a worker
            <--Began, Progress, Output, Ended-- a reader thread <--XREAD pool:events:<token>...--

The manager keeps everything it keeps with local workers: the queue and priorities, the
timeouts, retries, kills, and the spool, which only it writes. It hands out no more
attempts than the live workers have slots for (their announcements), and one more per
slot sent ahead (AHEAD), so a slot that frees takes its next job from the broker at once
instead of after a round trip through the hub; a job of higher priority takes one of
those back (never claimed, it ends ``NotBegun``, queued again, uncounted) and goes first.
An attempt whose lease is gone without its end being heard ended with its worker
(``WorkerDied``: it counts, and is retried by the job's rules); one not claimed for
CLAIM_PATIENCE seconds while a worker that serves it has a slot free is taken back.

A running attempt's status holds its token: a new hub (the last one was killed) takes
over what still runs (``recover``): it reads the attempt's stream again from its start,
and writes only the output its log does not hold yet (the log's size when the attempt
began is kept with the attempt in the broker, ``log_base``).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from pool import messages as msg
from pool.detached import heard
from pool.engines import EngineSettings
from pool.executor import (
    Began,
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
)
from pool.joblog import attempt_header, written
from pool.model import JobStatus, State

from . import protocol as p

log = logging.getLogger(__name__)

AHEAD = 1  # attempts sent ahead per slot of the workers that serve them
CLAIM_PATIENCE = 30.0  # seconds a sent attempt may wait unclaimed while a worker that serves it has a slot free
LEASE_LOOK_EVERY = 1.0  # seconds between two looks at the running attempts' leases
WORKERS_LOOK_EVERY = 1.0  # seconds between two looks at the workers' announcements
HOSTS_EVERY = 1.0  # seconds between two snapshots of what the machines do (pool workers)
FRESH_LOOK = 0.05  # seconds between two of them while a job finds no worker that serves it
REAPPEAR_GRACE = 6.0  # seconds an attempt the broker forgot has to be put back by its worker (it renews every 3 s)


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
    read_to: str = "0"  # the last entry of its stream read
    missing_since: float | None = None  # when the broker was first found not to know it
    unclaimed_since: float | None = None  # since when it waits unclaimed while a slot that serves it is free


class CeleryExecutor:
    leaves_running = False

    def __init__(self, settings: EngineSettings) -> None:
        if not settings.broker:
            raise ValueError("the celery engine needs --broker URL (redis://HOST:PORT/DB)")
        self.settings = settings
        self.workers = settings.workers
        self.db = p.connect(settings.broker)
        self.app: Any = None
        self.sent: dict[str, Sent] = {}  # by job id
        self.by_token: dict[str, Sent] = {}
        self.events: list[ExecutorEvent] = []
        self.heard: collections.deque[tuple[str, dict[bytes, bytes]]] = collections.deque()  # (token, entry)
        self.streams: dict[str, str] = {}  # what the reader reads: each held attempt's stream, from where
        self.streams_lock = threading.Lock()
        self.streams_added = threading.Event()
        self.stopped = threading.Event()
        self.reader: threading.Thread | None = None
        self.leases_at = 0.0
        self.announced: list[dict[str, Any]] = []
        self.announced_at = -1e9
        self.broker_trouble: str | None = None
        self.hosts_seen: list[dict[str, Any]] | None = None
        self.hosts_seen_at = 0.0

    # ------------------------------------------------------------ set up, take down
    def open(self, wake: Callable[[], None]) -> None:
        self.app = p.celery_app(self.settings.broker or "")
        self.reader = threading.Thread(target=self._read, args=(wake,), name="pool-hub-reader", daemon=True)
        self.reader.start()

    def close(self, leave_running: bool = False) -> None:
        for job_id in list(self.sent):
            self.stop(job_id, StopReason.SHUTDOWN, 0.0, time.monotonic())
        self.stopped.set()
        self.streams_added.set()
        if self.reader is not None:
            self.reader.join(5)

    def _read(self, wake: Callable[[], None]) -> None:
        """What the workers say, as it comes: handed to ``collect`` by way of ``wake``."""
        reader = p.connect(self.settings.broker or "")
        woken_to = "$"  # the wake stream: only what comes from now on
        while not self.stopped.is_set():
            with self.streams_lock:
                streams = {p.events_key(token): at for token, at in self.streams.items()}
            if not streams:  # nothing out: asleep until an attempt is
                self.streams_added.wait(1.0)
                self.streams_added.clear()
                continue
            try:
                wanted: Any = {**streams, p.WAKE: woken_to}
                found: Any = reader.xread(wanted, count=1000, block=250)
                self.broker_trouble = None
            except redis.RedisError as exc:
                self.broker_trouble = f"the broker cannot be reached: {exc}"
                self.stopped.wait(0.5)
                continue
            for stream, entries in found or ():
                if stream == p.WAKE.encode():
                    woken_to = entries[-1][0].decode() if entries else woken_to
                    continue  # the next read takes what it woke us for
                token = stream.decode().rpartition(":")[2]
                with self.streams_lock:
                    if token in self.streams and entries:
                        self.streams[token] = entries[-1][0].decode()
                self.heard.extend((token, fields) for _, fields in entries)
            if any(stream != p.WAKE.encode() for stream, _ in found or ()):
                wake()

    # ------------------------------------------------------------ handing out attempts
    def resize(self, workers: int) -> None:
        """Fewer: what was sent ahead beyond it is taken back, so no more begin than that."""
        self.workers = workers
        for sent in sorted(self.sent.values(), key=lambda s: s.sent_at, reverse=True):
            if len(self.sent) <= workers:
                break
            if not sent.began:
                self.take_back(sent.job.id)

    def live_workers(self, max_age: float = WORKERS_LOOK_EVERY) -> list[dict[str, Any]]:
        now = time.monotonic()
        if now - self.announced_at >= max_age:
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
        """The live workers that run ``job``: its task's module, or commands. None known:
        looked for again, unless just now (a job found unserved waits a while, and jobs
        behind it that find the worker which has come meanwhile go first)."""
        task = job.spec.task
        module = task.partition(":")[0] if task is not None else None
        for workers in (self.live_workers(), self.live_workers(max_age=FRESH_LOOK)):
            found = [w for w in workers if (module is None and w.get("commands")) or
                     (module is not None and module in w.get("tasks", ()))]
            if found:
                break
        return found

    def room(self, first: JobStatus) -> int:
        """Slots of the live workers that serve ``first`` and as many ahead, less the
        attempts out to them (and never more than ``pool serve --workers`` in all, so no
        more run at once). When that is none, one sent ahead of lower priority is taken
        back for ``first``. With no worker that serves it, one: ``start`` says why it
        waits, and the jobs behind it go on."""
        out = len(self.sent)
        capable = self.capable(first)
        if not capable:
            return min(1, self.workers - out)
        served = {p.COMMANDS_QUEUE for w in capable if w.get("commands")} | \
                 {p.task_queue(m) for w in capable for m in w.get("tasks", ())}
        competing = [s for s in self.sent.values() if p.queue_of(s.job) in served]
        slots: int = sum(w["slots"] for w in capable)
        room = min((1 + AHEAD) * slots - len(competing), self.workers - out)
        if room <= 0 and out <= self.workers:
            below = sorted((s for s in competing if not s.began and s.job.spec.priority < first.spec.priority),
                           key=lambda s: (s.job.spec.priority, -s.sent_at))
            if any(self.take_back(s.job.id) for s in below):  # the first that is still unclaimed
                return 1
        return room

    def running_on(self) -> collections.Counter[str | None]:
        """The attempts running on each machine, by its name."""
        return collections.Counter(s.host for s in self.sent.values() if s.began)

    def slot_free(self, job: JobStatus, busy: collections.Counter[str | None]) -> bool:
        """A live worker that serves ``job`` runs fewer attempts than it has slots (``busy``)."""
        return any(w["slots"] > busy[w.get("name")] for w in self.capable(job))

    def start(self, job: JobStatus, now: float) -> None:
        if not self.capable(job):
            self.events.append(Ended(job.id, job.attempt, NotBegun(State.QUEUED, unserved(job), later=True)))
            return
        token = secrets.token_hex(16)
        key = p.attempt_key(token)
        with self.db.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping={"state": "sent", "job": job.id, "attempt": job.attempt})
            pipe.expire(key, p.ATTEMPT_KEEP)
            pipe.execute()
        sent = Sent(token, job, now)
        self.hold(sent)
        # argsrepr: what Celery shows of the arguments (its logs, its events, Flower), and
        # computes with saferepr unless told: the job's env and args never, and 1 ms a job less.
        self.app.send_task(p.TASK_NAME, args=[p.attempt_message(token, job)], queue=p.queue_of(job),
                           serializer="json", argsrepr=f"(attempt {job.attempt} of job {job.id})", kwargsrepr="{}")

    def stop(self, job_id: str, reason: StopReason, grace: float, now: float) -> Stopping | None:
        sent = self.sent.get(job_id)
        if sent is None:
            return None
        if sent.stop_reason is None:
            sent.stop_reason = reason
            said = self.db.eval(p.CANCEL, 2, p.attempt_key(sent.token), p.cancel_key(sent.token), reason.value,
                                str(grace))
            if said == b"unstarted":  # it will never begin: the claim fails
                self._end(sent, Stopped(reason, False))
                return Stopping(began=False)
        return Stopping(began=True, kill_at=now + grace)

    def take_back(self, job_id: str) -> bool:
        sent = self.sent.get(job_id)
        if sent is None or sent.began:
            return False
        if self.db.eval(p.CANCEL, 1, p.attempt_key(sent.token), "take-back", "0", "unstarted only") != b"unstarted":
            return False
        self._end(sent, NotBegun(State.QUEUED, "taken back before a worker began it"))
        return True

    def pause(self, job_id: str) -> bool:
        return False  # not offered on remote workers yet: the attempt runs on

    def resume(self, job_id: str) -> bool:
        return False

    def hold(self, sent: Sent) -> None:
        self.sent[sent.job.id] = self.by_token[sent.token] = sent
        with self.streams_lock:
            self.streams[sent.token] = sent.read_to
        self.streams_added.set()

    def recover(self, job: JobStatus, now: float) -> bool:
        """Take over an attempt the last hub handed out: read its stream again, and write
        only the output its log does not hold yet."""
        if job.state not in (State.RUNNING, State.PAUSED):
            return False  # the manager writes running when an attempt begins: this one never did
        token = job.token
        try:
            record = self.db.hgetall(p.attempt_key(token)) if token else {}
        except redis.RedisError:
            record = {}
        if not token or record.get(b"state") != b"running":  # forgotten, or its end was heard already
            self.events.append(Ended(job.id, job.attempt, Lost("the broker knows it no more as running")))
            return True
        sent = Sent(token, job, now, began=True, host=job.host)
        base = int(record.get(b"log_base", b"-1"))
        if base >= 0:
            header = len(attempt_header(job)) if job.attempt > 1 else 0
            sent.offset = max(0, self.log_written(job.id) - base - header)
        self.hold(sent)
        return True

    def log_written(self, job_id: str) -> int:
        """Bytes written to the job's log so far, those a cut dropped too (--max-log-bytes)."""
        return written(os.path.join(self.settings.worker.spool, "logs", f"{job_id}.log"))

    def holds(self, job_id: str) -> bool:
        return job_id in self.sent

    def busy(self) -> bool:
        return bool(self.sent)

    def running_ids(self) -> list[str]:
        return list(self.sent)

    def hosts(self) -> list[dict[str, Any]] | None:
        """What the machines do, as last seen: anew at most every HOSTS_EVERY seconds (the
        manager writes it into manager.json whenever it changes: with each job's start and
        end, 100 times a second at 120 tiny jobs a second, 7% of the hub's time)."""
        now = time.monotonic()
        if self.hosts_seen is None or now - self.hosts_seen_at >= HOSTS_EVERY:
            self.hosts_seen, self.hosts_seen_at = self.hosts_now(), now
        return self.hosts_seen

    def hosts_now(self) -> list[dict[str, Any]]:
        busy = self.running_on()
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
        if self.sent:
            return now + LEASE_LOOK_EVERY
        # What the machines do changed since the last snapshot (the last job ended, say): the
        # manager wakes to say it once the next snapshot is due, not at its next job.
        return self.hosts_seen_at + HOSTS_EVERY if self.hosts_seen != self.hosts_now() else None

    # ------------------------------------------------------------ what happened
    def collect(self, ready: list[Any], now: float) -> list[ExecutorEvent]:
        while self.heard:
            token, fields = self.heard.popleft()
            try:
                self._take(token, fields, now)
            except Exception:  # one attempt's garbled word never stops the hub
                log.exception("could not take a worker's word on attempt %s", token)
        if now - self.leases_at >= LEASE_LOOK_EVERY:
            self.leases_at = now
            self._look_at_leases(now)
        events, self.events = self.events, []
        return events

    def _take(self, token: str, fields: dict[bytes, bytes], now: float) -> None:
        sent = self.by_token.get(token)
        if sent is None:
            return  # an attempt this hub no longer holds (ended, or another hub's)
        kind, data = fields.get(b"kind", b""), fields.get(b"data", b"")
        job = sent.job
        if sent.host is None:  # each word names its worker: one whose runner never said it began, too
            sent.host = fields.get(b"worker", b"").decode("utf-8", "replace") or None
        if kind == b"message":
            reply = msg.decode_reply(data)
            if isinstance(reply, msg.Started):
                if not sent.began:  # not again, for an attempt a new hub took over
                    sent.began = True
                    # What the log holds before this attempt's output: a new hub writes on from there.
                    self.db.hset(p.attempt_key(sent.token), "log_base", self.log_written(job.id))
                    self.events.append(Began(job.id, job.attempt, now,
                                             Start(reply.started_at, None, sent.host, sent.token)))
            elif isinstance(said := heard(reply, job), Progress):
                self.events.append(said)
            elif said is not None:
                sent.outcome = said
        elif kind == b"log":
            offset = int(fields.get(b"offset", b"0"))
            end = offset + len(data)
            if end > sent.offset:  # what the log holds already is not written again (a new hub reads it twice)
                data = data[max(0, sent.offset - offset):]
                sent.offset = end
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
                    pipe.hmget(p.attempt_key(sent.token), "state", "worker")
                answers = pipe.execute()
        except redis.RedisError as exc:
            self.broker_trouble = f"the broker cannot be reached: {exc}"
            return
        busy = self.running_on()
        for n, sent in enumerate(claimed):
            leased, (state, worker) = answers[2 * n], answers[2 * n + 1]
            if sent.host is None and worker:
                # The worker that claimed it, should it be lost before its word that the
                # attempt began reached the hub (a kill -9 a moment after the claim).
                sent.host = worker.decode("utf-8", "replace")
            if state == b"running" and not leased:  # its worker stopped it, or is gone: nothing of it runs
                self._end(sent, Stopped(sent.stop_reason, True) if sent.stop_reason is not None else
                          WorkerDied(f"its worker {sent.host or '(unknown)'} was lost: it stopped renewing "
                                     "the attempt's lease", True))
            elif state == b"sent":
                # Sent ahead, it waits for a slot however long the jobs before it run; with
                # a slot free that does not take it (its message lost with a worker that
                # had fetched it), it is taken back and sent again.
                sent.unclaimed_since = (sent.unclaimed_since or now) if self.slot_free(sent.job, busy) else None
                if sent.unclaimed_since is not None and now - sent.unclaimed_since >= CLAIM_PATIENCE:
                    self.take_back(sent.job.id)
            elif state is None:
                # The broker forgot it (restarted with no persistence): a worker that runs it
                # puts its record back at its next renewal; if none does in REAPPEAR_GRACE,
                # none runs it.
                sent.missing_since = sent.missing_since or now
                if now - sent.missing_since >= REAPPEAR_GRACE:
                    self._end(sent, WorkerDied(f"its worker {sent.host or '(unknown)'} was lost with the broker's "
                                               "memory of the attempt", True) if sent.began else
                              NotBegun(None, "the broker forgot it before a worker began it"))
            else:
                sent.missing_since = None

    def _end(self, sent: Sent, outcome: Outcome) -> None:
        if self.sent.get(sent.job.id) is not sent:
            return
        del self.sent[sent.job.id]
        self.by_token.pop(sent.token, None)
        with self.streams_lock:
            self.streams.pop(sent.token, None)
        self.events.append(Ended(sent.job.id, sent.job.attempt, outcome))
        try:  # its end is the manager's to write now: the broker forgets the attempt
            with self.db.pipeline(transaction=False) as pipe:
                pipe.delete(p.lease_key(sent.token), p.events_key(sent.token), p.cancel_key(sent.token))
                pipe.hset(p.attempt_key(sent.token), "state", "ended")
                pipe.execute()
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
