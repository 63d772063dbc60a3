"""Intake: turn files in ``incoming/`` into queued jobs, or into rejections with a reason.

    incoming/x.json --open (safe)--> complete? --rename--> incoming/.claimed~<token>~x.json
                                                 --> read what was claimed --> parse, check
                                                 --ok--> status/<id>.json (queued), one per job
                                                 --bad-> rejected/x.json + x.json.error.json
                                                 --> unlink the claim

A file is claimed before it is read, so what is parsed is exactly what was claimed: a
writer appending lines (``echo ... >> batch.jsonl``) after the claim starts a new file,
never adds to one already read. It is complete when no process has it open for writing
(a read lease says so); where the kernel will not say (a file of another user), when
watchdog saw it closed or renamed into place, or it has been quiet for ``settle``
seconds. A half-written file is never rejected for being half-written.

A claimed file's generated ids derive from its token, so if the manager dies between the
claim and the last status write, the next one reads the claim again and ends with the
very same jobs, none twice. A big ``.jsonl`` is taken in slices, a few milliseconds of
work per turn of the manager's loop (checked whole first: it is accepted or rejected
whole), so timeouts, kills and dispatch go on while a million lines come in.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import logging
import os
import secrets
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

from . import defaults
from .context import Context
from .dropzone import claim_parts, is_job_name, shown, writer_open
from .errors import InvalidJobSpec
from .jobfile import iter_job_file
from .limits import Capacity
from .model import JobSpec, JobStatus, iso_time, new_status
from .queuedbook import record_of
from .rules import is_loader_variable
from .safeio import HeldFile, UnsafeFile, read_all
from .watch import CHANGED, COMPLETE, GONE

log = logging.getLogger(__name__)

KEEP_SPECS = 5000  # a batch this small keeps its parsed jobs between checking and writing
SLICE = 64  # jobs between looks at the clock
WRITER_RECHECK = 0.5  # seconds: a file still open for writing is looked at again (or on its close) ...
WRITER_RECHECK_MAX = 8.0  # ... and, while it stays open, twice as late each time, up to this


@dataclass(frozen=True)
class IntakeRules:
    """What this manager accepts; a job it cannot run is refused at the door."""

    task_reason: Callable[[str], str | None]  # why a task cannot run here, or None
    allow_commands: bool = False
    allow_loader_env: bool = False
    group_gid: int | None = None
    settle: float = defaults.SETTLE
    max_file_bytes: int = defaults.MAX_FILE_BYTES
    capacity: Capacity | None = None  # what declared needs must fit in (pool serve --memory, --cpus)

    def refusal(self, spec: JobSpec) -> str | None:
        """Why this manager cannot run the job, or None (a schedule's job is asked too)."""
        if spec.needs is not None and self.capacity is not None and (why := self.capacity.refuses(spec.needs)):
            return why
        if spec.on_finish and not self.allow_commands:
            return "'on_finish' runs a command; start the manager with --allow-commands"
        if spec.task is not None:
            return self.task_reason(spec.task)
        if not self.allow_commands:
            return "command jobs are disabled; start the manager with --allow-commands"
        loader = sorted(k for k in spec.env if is_loader_variable(k))
        if loader and not self.allow_loader_env:
            return (f"'env' sets {loader[0]}, which loads code into every program it starts; "
                    "start the manager with --allow-loader-env to allow it")
        return None


@dataclass
class Batch:
    """A claimed file being taken in: first every job is checked, then each is written.
    ``done`` counts the jobs of the current phase that are through it; ``jobs`` is the
    parse positioned there, dropped after any trouble so the next turn resumes at
    ``done`` exactly (a job that failed to be written is written again, never skipped)."""

    entry: str  # the claim's name in incoming/
    name: str  # the file's own name
    token: str
    data: bytes
    submitter: int
    recovering: bool
    mtime: str  # when the file was written: the submission time of jobs that do not say
    jobs: Iterator[JobSpec] | None = None
    done: int = 0
    kept: list[JobSpec] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    # Jobs of the batch that come after others of it (or after ids not known yet, which
    # must turn up later in it): checked once the whole batch is, for a cycle too.
    after: dict[str, list[str]] = field(default_factory=dict)
    checked: bool = False
    ahead: JobSpec | None = None  # the job after the chunk being written (``Intake._next_chunk``)
    # Every job's id is one pool made, and none has an environment to keep apart: its
    # queued statuses go to records (one batch's jobs of a record all come together).
    in_records: bool = True


class Intake:
    """Takes files in; each accepted job gets its queued status (through the ledger, whose
    hook queues it) as soon as it is ready, so a failure half way loses nothing."""

    def __init__(self, ctx: Context, rules: IntakeRules) -> None:
        self.ctx = ctx
        self.spool = ctx.spool
        self.rules = rules
        self.notes: deque[tuple[str, str]] = deque()  # filled by the watchdog thread
        self.seen: dict[str, str] = {}  # name -> WRITING | COMPLETE, from file events
        self.recheck_at: float | None = None  # wall-clock time to look at waiting files again
        self.batches: dict[str, Batch] = {}  # claim entry -> its batch, in the order claimed
        self.claimed: set[str] = set()  # the names of the files of those batches
        self.reserved: set[str] = set()  # ids of jobs being taken in
        self.mine: set[str] = set()  # claims made by this manager (others are a dead one's)
        self.failing = False  # the last look could not write (a full or read-only disk)
        # Files known to be still written (or held by a lease): name -> (wall-clock time to
        # look again, the wait after that). Skipped without a syscall until then, or until
        # their close event: thousands kept open cost a walk nothing.
        self.waiting: dict[str, tuple[float, float]] = {}
        self.walked_to: str | None = None  # where the last walk stopped: the next goes on from there
        # Names file events told of since the last look: between the rescan ticks, a look
        # goes through them alone, never lists the folder (a listing of thousands of
        # files, each turn, was most of the cost of a file dropped while others wait).
        # In the order first heard, which is the order written: a slow turn that takes one
        # file before it hands out jobs takes the one written first (jobs of one priority
        # start in submission order; taken by name, an executor's burst ran ahead of the
        # job submitted before it: test_files_heard_together_on_a_slow_turn_are_taken_in_the_order_they_were_heard).
        self.heard: dict[str, None] = {}
        self.finished: list[str] = []  # claims whose jobs all have their status, to go at the look's end
        self.owners = ctx.spool.submitters(rules.group_gid)

    def due(self) -> bool:
        """True when a file event arrived (and its file is not looked at yet), a waiting
        file may be complete, or a batch is half taken in."""
        return bool(self.notes) or bool(self.heard) or bool(self.batches) or (
            self.recheck_at is not None and self.ctx.clock.time() >= self.recheck_at)

    def busy(self) -> bool:
        return bool(self.batches)

    # ------------------------------------------------------------ a look at incoming/
    def scan(self, seconds: float, full: bool = False) -> None:
        """Take in what incoming/ holds for about ``seconds`` of work; what is left is
        taken next turn. The folder is listed whole when ``full`` (the manager's first
        turn and its rescan tick: what an event missed is found then), when a file
        waited on may be complete, and to go on with a walk cut short; otherwise only the
        files events told of are looked at. An OSError (a full or read-only disk) ends
        the look; ``failing`` stays set until a look goes through, so the trouble is
        logged once."""
        self._absorb_notes()
        if full or self.failing or (self.recheck_at is not None and self.ctx.clock.time() >= self.recheck_at):
            self.recheck_at = None
            self._look(seconds, None)
        else:
            self._look(seconds, list(self.heard))
        self.failing = False

    def _look(self, seconds: float, heard: list[str] | None) -> None:
        try:
            self._take_some(seconds, heard)
        finally:
            self._release_finished()

    def _release_finished(self) -> None:
        """The claims of batches whose jobs all have their status go, together, after one
        sync of status/: under pool serve --durable, a job is on disk before its file
        leaves incoming/ (a claim left by a power cut is taken in again, none twice)."""
        if self.finished:
            self.spool.statuses.sync()
            entries, self.finished = self.finished, []
            for entry in entries:
                self.spool.drop.release_claim(entry)

    def _listed(self) -> list[str]:
        """The folder's names, in the order of a walk; claims not being taken in (a dead
        manager's) are opened on the way."""
        names, claims = self.spool.drop.listing()
        present = set(names)
        heard = [n for n in self.heard if n in present]  # first, in their order (a rescan's turn too)
        self.heard.clear()  # each is in the listing, or gone
        if self.waiting:  # forget files gone meanwhile (their events may have been lost)
            self.waiting = {n: w for n, w in self.waiting.items() if n in present}
        for entry in claims:
            if entry not in self.batches:
                self._guarded(entry, functools.partial(self._open_claim, entry, entry not in self.mine))
        if heard:
            first = set(heard)
            names = [n for n in names if n not in first]
        return heard + self._walk(names)

    def _take_some(self, seconds: float, heard: list[str] | None) -> None:
        """Take in the files ``heard`` of, or (None) those of a listing of the folder."""
        now = self.ctx.clock.time()
        walk = self._listed() if heard is None else heard
        # The slice starts after the look, and each loop makes one step before it looks at
        # the clock: on a loaded machine, listing ten thousand entries can take longer than
        # a slice, and a turn that did nothing else would be followed by another like it.
        deadline = self.ctx.clock.monotonic() + seconds
        taken = False
        for name in walk:
            if taken and self.ctx.clock.monotonic() >= deadline:
                if heard is None:
                    self.recheck_at = now
                break  # the names heard and not looked at stay heard: due() says so
            self.heard.pop(name, None)
            waiting = self.waiting.get(name)
            if waiting is not None and now < waiting[0]:
                continue  # still written when last looked at: its close event, or its time, says when
            if is_job_name(name):
                self._guarded(name, functools.partial(self._take, name, now))
                taken = True
            if heard is None:
                self.walked_to = name
        else:
            if heard is None:
                self.walked_to = None  # the whole folder was walked: the next walk starts at its start
        # Smallest first: a single job dropped while a million lines come in starts at once.
        for n, batch in enumerate(sorted(self.batches.values(), key=lambda b: len(b.data))):
            if n and self.ctx.clock.monotonic() >= deadline:
                return
            self._guarded(batch.entry, functools.partial(self._advance, batch, deadline))

    def _walk(self, names: list[str]) -> list[str]:
        """The folder's names in order, from just after where the last walk stopped (then
        from the start), so that files a turn spends its slice on are not the same ones
        every turn."""
        ordered = sorted(names)
        if self.walked_to is None:
            return ordered
        cut = bisect.bisect_right(ordered, self.walked_to)
        return ordered[cut:] + ordered[:cut]

    def _wait_for_writer(self, name: str, now: float) -> None:
        """The file is still written (or held): looked at again later, each time later."""
        _, wait = self.waiting.get(name, (0.0, WRITER_RECHECK / 2))
        wait = min(wait * 2, WRITER_RECHECK_MAX)
        self.waiting[name] = (now + wait, wait)
        self._recheck(now + wait)

    def _guarded(self, entry: str, step: Callable[[], None]) -> None:
        """One file's trouble is that file's: rejected with the reason, or tried again."""
        try:
            step()
        except FileNotFoundError:
            self._forget(entry)  # gone meanwhile (taken back by its writer)
        except HeldFile:
            # Its writer holds a lease on it (an attack, or a tool that writes that way):
            # that file waits, the others go on; our open has asked the holder to let go.
            self._wait_for_writer(entry, self.ctx.clock.time())
        except OSError as exc:
            if not self.failing:
                log.error("incoming/%s: cannot take it now (%s); will try again", shown(entry), exc)
            self.failing = True
            self.recheck_at = self.ctx.clock.time() + 1.0
            raise  # a full or read-only disk: the manager says so once and waits
        except Exception as exc:
            log.exception("incoming/%s: could not be taken in", shown(entry))
            self._reject(entry, f"{shown(entry)} could not be taken in: {type(exc).__name__}: {exc}")

    def _absorb_notes(self) -> None:
        while self.notes:
            name, what = self.notes.popleft()
            if what in (GONE, COMPLETE):
                self.waiting.pop(name, None)  # closed or gone: worth a look at once
            if what == GONE:
                self.seen.pop(name, None)
                self.heard.pop(name, None)
            else:
                self.heard.setdefault(name)
                if what != CHANGED:
                    self.seen[name] = what

    def _take(self, name: str, now: float) -> None:
        try:
            fd, st = self.spool.drop.open_checked(name, self.owners, self.rules.max_file_bytes)
        except UnsafeFile as exc:
            self._reject(name, f"{shown(name)} {exc}")
            return
        try:
            if not self._complete(name, fd, st.st_mtime, now):
                return
            token = secrets.token_hex(6)
            entry = self.spool.drop.claim(name, token)
            self.mine.add(entry)
            self.seen.pop(name, None)
            self.waiting.pop(name, None)
            self._begin(entry, name, token, fd, st, recovering=False)
        finally:
            os.close(fd)

    def _complete(self, name: str, fd: int, mtime: float, now: float) -> bool:
        """Whether the file is done being written (see the module's docstring)."""
        writing = writer_open(fd)
        if writing is not None:
            if writing:
                self._wait_for_writer(name, now)  # its close event wakes us sooner
            return not writing
        if self.seen.get(name) == COMPLETE or now - mtime >= self.rules.settle:
            return True
        self._recheck(max(mtime + self.rules.settle, now + 0.05))
        return False

    def _recheck(self, at: float) -> None:
        self.recheck_at = at if self.recheck_at is None else min(self.recheck_at, at)

    def _open_claim(self, entry: str, recovering: bool) -> None:
        """A claim left by a dead manager (or one still being written when claimed)."""
        parts = claim_parts(entry)
        if parts is None:
            self._reject(entry, f"{shown(entry)} is named like a claim but is not one pool made")
            return
        token, name = parts
        try:
            fd, st = self.spool.drop.open_checked(entry, self.owners, self.rules.max_file_bytes)
        except UnsafeFile as exc:
            self._reject(entry, f"{shown(name)} {exc}")
            return
        try:
            self._begin(entry, name, token, fd, st, recovering)
        finally:
            os.close(fd)

    def _begin(self, entry: str, name: str, token: str, fd: int, st: os.stat_result, recovering: bool) -> None:
        if writer_open(fd):
            # Opened for writing between our look and the claim: read it once it is closed.
            self._recheck(self.ctx.clock.time() + WRITER_RECHECK)
            return
        try:
            data = read_all(fd, self.rules.max_file_bytes)
        except UnsafeFile as exc:
            self._reject(entry, f"{shown(name)} {exc}")
            return
        mtime = iso_time(datetime.fromtimestamp(st.st_mtime_ns / 1e9, timezone.utc))
        self.batches[entry] = Batch(entry, name, token, data, st.st_uid, recovering, mtime)
        self.claimed.add(name)
        log.debug("incoming/%s claimed as %s", shown(name), entry)

    # ------------------------------------------------------------ a batch, in slices
    def _advance(self, batch: Batch, deadline: float) -> None:
        try:
            if not batch.checked:
                if not self._check_some(batch, deadline):
                    return
                batch.checked, batch.done, batch.jobs = True, 0, None
            if self._write_some(batch, deadline):
                self.finished.append(batch.entry)
                self._forget(batch.entry)
                if not self.spool.statuses.durable:  # nothing to sync first: its file goes at once
                    self._release_finished()
        except InvalidJobSpec as exc:
            self._reject(batch.entry, str(exc))
        except BaseException:
            batch.jobs, batch.ahead = None, None  # resume at `done` next time
            raise

    def _jobs(self, batch: Batch) -> Iterator[JobSpec]:
        """The batch's jobs from ``done`` on (kept ones when all were kept)."""
        if batch.jobs is None:
            if batch.checked and len(batch.kept) == len(batch.ids):
                batch.jobs = itertools.islice(batch.kept, batch.done, None)
            else:
                batch.jobs = itertools.islice(iter_job_file(batch.data, shown(batch.name), batch.token),
                                              batch.done, None)
        return batch.jobs

    def _check_some(self, batch: Batch, deadline: float) -> bool:
        """Check jobs of the batch until the deadline; True when every one is checked."""
        for spec in self._jobs(batch):
            self._check_runnable(spec, batch)
            if batch.in_records and self._record_of(batch, spec) is None:
                batch.in_records = False
            in_batch = [d for d in spec.after if d in batch.ids or not self.known(d)]
            if in_batch:
                batch.after[spec.id] = in_batch
            batch.ids.add(spec.id)
            self.reserved.add(spec.id)
            if len(batch.ids) <= KEEP_SPECS:
                batch.kept.append(spec)
            batch.done += 1
            if batch.done % SLICE == 0 and self.ctx.clock.monotonic() >= deadline:
                return False
        self._check_dependencies(batch)
        return True

    def known(self, job_id: str) -> bool:
        """A job of the spool, one being taken in, or one whose file is in incoming/ or
        claimed from it (dropped a moment before the job that comes after it: if it is
        refused, what comes after it is cancelled, its dependency gone)."""
        name = f"{job_id}.json"
        return job_id in self.reserved or self.spool.has_status(job_id) or name in self.claimed or (
            self.spool.incoming / name).exists()

    def _check_dependencies(self, batch: Batch) -> None:
        """Every job a job of the batch comes after is in the spool or in the batch, and
        the batch's jobs never wait for each other in a circle. Raises InvalidJobSpec."""
        for job_id, dependencies in batch.after.items():
            unknown = [d for d in dependencies if d not in batch.ids]
            if unknown:
                raise InvalidJobSpec(f"job {job_id!r} in {shown(batch.name)}: 'after' names {unknown[0]!r}, which "
                                     "is neither a job of the spool nor of this file")
        circle = find_circle(batch.after)
        if circle:
            raise InvalidJobSpec(f"{shown(batch.name)}: its jobs wait for each other in a circle: "
                                 + " -> ".join(circle))

    def _check_runnable(self, spec: JobSpec, batch: Batch) -> None:
        generated = spec.id == batch.token or spec.id.startswith(f"{batch.token}-")  # new: cannot exist yet
        reason = self.rules.refusal(spec)
        if reason is None and not generated and not batch.recovering and (
                spec.id in self.reserved or self.spool.has_status(spec.id)):
            reason = f"id {spec.id!r} already exists"
        if reason:
            raise InvalidJobSpec(f"job {spec.id!r} in {shown(batch.name)}: {reason}")

    def _write_some(self, batch: Batch, deadline: float) -> bool:
        """Give jobs of the batch their queued status until the deadline; True when done.
        Jobs whose ids pool made go a record's worth to a file (pool/queuedbook.py); the
        others a file each, SLICE at a time (written together: under --durable, one flush
        for them all)."""
        jobs = self._jobs(batch)
        reason = "accepted (claim finished after an interruption)" if batch.recovering else "accepted"
        while chunk := self._next_chunk(batch, jobs):
            in_record = self._record_of(batch, chunk[0]) is not None
            try:
                if in_record and not (batch.recovering and self.spool.queued.exists(chunk[0].id)):
                    self.ctx.ledger.create_queued([self._queued(spec, batch) for spec in chunk], reason)
                elif not in_record:
                    self.ctx.ledger.create_many([self._queued(spec, batch) for spec in chunk if not (
                        batch.recovering and self.spool.has_status(spec.id))], reason)  # written before a crash
            except BaseException:
                batch.recovering = True  # some may be written: it goes on as after a crash, none twice
                raise
            batch.done += len(chunk)
            if batch.ahead is not None and self.ctx.clock.monotonic() >= deadline:
                return False
        return True

    def _queued(self, spec: JobSpec, batch: Batch) -> JobStatus:
        return new_status(spec, spec.submitted_at or batch.mtime, batch.submitter)

    @staticmethod
    def _record_of(batch: Batch, spec: JobSpec) -> str | None:
        """The record a job is written to (None: a file of its own): one whose id pool made
        for this batch, with no environment to keep apart (which needs a file), of a batch
        whose jobs all are such (a record is written once: it cannot take a job of its
        lines that comes after one with a file of its own)."""
        if not batch.in_records or not spec.id.startswith(f"{batch.token}-") or spec.caller_env:
            return None
        return record_of(spec.id)

    def _next_chunk(self, batch: Batch, jobs: Iterator[JobSpec]) -> list[JobSpec]:
        """The next jobs written together: those of one record, or up to SLICE others. The
        first job after them is kept (``batch.ahead``) for the next chunk."""
        first = batch.ahead if batch.ahead is not None else next(jobs, None)
        if first is None:
            return []
        record = self._record_of(batch, first)
        chunk = [first]
        for spec in jobs:
            if self._record_of(batch, spec) != record or (record is None and len(chunk) == SLICE):
                batch.ahead = spec
                return chunk
            chunk.append(spec)
        batch.ahead = None
        return chunk

    def _reject(self, entry: str, reason: str) -> None:
        log.warning("rejected incoming/%s: %s", shown(entry), reason)
        self.spool.drop.reject(entry, reason)
        self._forget(entry)

    def _forget(self, entry: str) -> None:
        batch = self.batches.pop(entry, None)
        if batch is not None:
            self.claimed.discard(batch.name)
            self.reserved -= batch.ids
            if not self.reserved:  # a set keeps its table when emptied: a million ids' worth
                self.reserved = set()
        self.seen.pop(entry, None)
        self.waiting.pop(entry, None)
        self.mine.discard(entry)


def find_circle(after: dict[str, list[str]]) -> list[str]:
    """A circle of jobs each waiting for the next (``after``: job -> the jobs it waits
    for), as ids from one back to itself; [] when there is none. Iterative: a chain of
    any length is fine."""
    done: set[str] = set()
    for start in after:
        if start in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            job_id, next_edge = stack.pop()
            if next_edge == 0:
                if job_id in on_path:
                    return [*path[path.index(job_id):], job_id]
                if job_id in done:
                    continue
                path.append(job_id)
                on_path.add(job_id)
            edges = after.get(job_id, [])
            if next_edge < len(edges):
                stack.append((job_id, next_edge + 1))
                stack.append((edges[next_edge], 0))
            else:
                path.pop()
                on_path.discard(job_id)
                done.add(job_id)
    return []
