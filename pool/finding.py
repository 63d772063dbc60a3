"""Finding a job, and reading what became of it, with or without a manager serving.

A submitted job is in one of four places, and moves only forward: a file in incoming/, a
claim there (``.claimed~<token>~<name>``, while a manager takes it in), its status in
status/, or, refused, a file in rejected/ with its reason. ``status`` looks in that order,
so it finds the job wherever it is between; a job not yet taken in shows as queued.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections.abc import Collection, Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from .errors import AmbiguousId, CorruptStatus, JobNotFound, JobRejected, WaitTimeout
from .finalindex import MAX_INDEX_BYTES, NAME, Indexed, document_at, read_index
from .jobfile import parse_job
from .ledger import Ledger, append_to_events
from .lifecycle import Role
from .model import DEFAULT_GROUP, ID_PATTERN, JobStatus, State, new_status
from .queuedbook import Listed
from .rules import is_time
from .safeio import Owners, UnsafeFile, read_all
from .spool import SpoolDir

POLL_INTERVAL = 0.05
VERDICT_WAIT = 3.0  # a serving manager takes a job file within milliseconds: seconds mean it is busy
FEW_JOBS = 64  # fewer jobs than this: their files looked at one by one, not status/ listed
STATES = {state.value: state for state in State}


def brief_of(data: bytes) -> Brief | None:
    """What a table first needs of a status document, parsed but not checked; None for
    one that is not a status (`decoded` would refuse it, and `pool status ID` says why).
    What is used before a row is decoded must be what pool writes: an id names files (its
    lock), a time is parsed (--since)."""
    try:
        doc = orjson.loads(data)
        brief = Brief(doc["id"], State(doc["state"]), doc["created_at"], doc.get("name") or "",
                      doc.get("group") or DEFAULT_GROUP, data)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if isinstance(brief.id, str) and ID_PATTERN.match(brief.id) and is_time(brief.created_at) and \
            isinstance(brief.name, str) and isinstance(brief.group, str):
        return brief
    return None


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a listing makes its objects: none of them form
    a cycle, and the collector, woken again and again by so many new objects, took a
    third of `pool status --json` over 100,000 jobs (benchmarks/status_listing.py)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def default_spool_path() -> str:
    return os.environ.get("POOL_SPOOL") or "spool"


class Brief(NamedTuple):
    """A job as a table first needs it (see ``Finding.briefs``): a tuple, made for every
    job of a large spool (a dataclass cost twice as much to make)."""

    id: str
    state: State
    created_at: str
    name: str
    group: str  # the group whose limit it obeys (``default``: none named)
    # Its status document; None for a job not taken in yet (``status``), for one ended
    # (its ``line`` in the index says where its document is), and for one in a record
    # unless ``briefs`` was asked for documents.
    data: bytes | None
    status: JobStatus | None = None
    line: Indexed | None = None


class Finding:
    """A spool directory seen from a program that reads its jobs."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.dir = SpoolDir(path if path is not None else default_spool_path())

    @property
    def path(self) -> Path:
        return self.dir.root

    def _ledger(self) -> Ledger:
        return Ledger(self.dir, Role.CLIENT, append_to_events(self.dir))

    def statuses(self, state: State | str | None = None,
                  cache: dict[str, tuple[int, JobStatus]] | None = None) -> list[JobStatus]:
        """Every job's status (newest first), optionally only those in ``state``. Pass the
        same ``cache`` dict to repeated calls to parse only what changed meanwhile."""
        wanted = State(state) if state is not None else None
        found = [s for s in self.dir.iter_statuses(cache) if wanted is None or s.state is wanted]
        found.extend(s for s in self.submitted() if wanted in (None, s.state))
        found.sort(key=lambda s: s.created_at, reverse=True)
        return found

    def briefs(self, states: Collection[State | str] = (), documents: bool = False) -> list[Brief]:
        """Every job (newest first), or those in any of ``states``, as a table first needs
        them: each document parsed as ``documents`` parses it, not checked; ``decoded``
        checks the few a table shows (decoding all of 10,000 took most of a `pool
        status`). A job ended (its line in the index) comes with no document, nor does one
        queued in a record unless ``documents`` are asked for: ``decoded`` reads them.
        Jobs not yet taken in are included."""
        wanted = {State(state).value for state in states}
        found: list[Brief] = []
        statuses, owners = self.dir.statuses, self.dir.owners
        with collector_paused():
            indexed = read_index(statuses, owners)  # a job whose line stands is not read
            listed: list[Listed] = []
            if documents:
                with_file, in_record = self.dir.listing()
            else:
                with_file, listed, in_record = self.dir.brief_listing()
            brief: Brief | None
            for data in in_record.values():
                brief = brief_of(data)
                if brief is not None and (not wanted or brief.state.value in wanted):
                    found.append(brief)
            new = tuple.__new__  # a Brief made as a tuple is, at half its constructor's cost
            for job_id, state, created_at, name, group in listed:  # checked as brief_of checks (listed_in)
                if state in STATES and (not wanted or state in wanted):
                    found.append(new(Brief, (job_id, STATES[state], created_at, name, group, None, None, None)))
            for job_id in with_file:
                name = f"{job_id}.json"
                line = indexed.get(job_id)
                try:
                    if line is not None and line.stands_for(os.stat(name, dir_fd=statuses.fd, follow_symlinks=False)):
                        if not wanted or line.state in wanted:
                            found.append(Brief(job_id, STATES[line.state], line.created_at, line.name, line.group,
                                               None, None, line))
                        continue
                    brief = brief_of(statuses.read(name, owners))
                except (OSError, UnsafeFile):
                    continue
                if brief is not None and (not wanted or brief.state.value in wanted):
                    found.append(brief)
        found += [Brief(s.id, s.state, s.created_at, s.spec.name, s.spec.queue_group, None, s)
                  for s in self.submitted() if not wanted or s.state.value in wanted]
        found.sort(key=itemgetter(2), reverse=True)  # created_at
        return found

    def decoded(self, briefs: Iterable[Brief]) -> list[JobStatus]:
        """The whole statuses of these jobs, checked; one that is not a status is left out."""
        statuses = []
        for brief in briefs:
            if brief.status is not None:
                statuses.append(brief.status)
                continue
            try:
                statuses.append(JobStatus.decode(brief.data, f"status/{brief.id}.json") if brief.data is not None
                                else self.dir.read_status(brief.id))
            except (CorruptStatus, JobNotFound):
                continue
        return statuses

    def documents(self, states: Collection[State | str] = ()) -> Iterator[bytes]:
        """Every job's status document as it is on disk (newest first), for ``--json``, or
        those in any of ``states`` (as ``briefs`` reads them); jobs not yet taken in are
        included. An ended job's is read from the index as it is yielded, not held with
        the others (100,000 of them held took 182 MB), or from its file where the index
        no longer has it where it was (compacted since)."""
        briefs = self.briefs(states, documents=True)
        try:
            index: int | None = self.dir.statuses.open_checked(NAME, self.dir.owners, MAX_INDEX_BYTES)[0]
        except (OSError, UnsafeFile):
            index = None
        try:
            for brief in briefs:
                if brief.data is not None:
                    yield brief.data
                elif brief.status is not None:
                    yield orjson.dumps(brief.status.to_dict())
                elif brief.line is not None:
                    data = document_at(index, brief.line) if index is not None else None
                    if data is None:
                        try:
                            data = self.dir.statuses.read(f"{brief.id}.json", self.dir.owners)
                        except (OSError, UnsafeFile):
                            continue  # gone since
                    yield data
        finally:
            if index is not None:
                os.close(index)

    def paused_for(self, statuses: Iterable[JobStatus]) -> dict[str, float]:
        """Seconds each of these jobs' current attempt has been paused (`pool pause`), for
        those that ever were: for a few jobs, a look for each one's record; for more, one
        look at status/ first (a page of a table), then a read of each one's record."""
        statuses = list(statuses)
        if len(statuses) <= FEW_JOBS:  # a listing of status/ costs what its size does: 0.4 s at a million jobs
            ever = {status.id for status in statuses}
        else:
            ever = {name[:-len(".paused")] for name in self.dir.statuses.listdir() if name.endswith(".paused")}
        now = time.time()
        found = {}
        for status in statuses:
            if status.id in ever:
                pauses = self.dir.read_pauses(status.id, status.attempt)
                if pauses is not None:
                    found[status.id] = pauses.total(now)
        return found

    def rejected_lately(self, seconds: float = 86400.0) -> int:
        """How many files were refused in the last ``seconds``."""
        try:
            return self.dir.drop.rejected_since(time.time() - seconds)
        except OSError:
            return 0

    def events(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """The events still kept in events.jsonl (and the log before it), of one job or all."""
        return self.dir.events.read(self.dir.owners, job_id)

    def submitted(self) -> list[JobStatus]:
        """Jobs submitted through this client and not yet taken in by a manager."""
        pending = []
        for name in self.dir.drop.names():
            job_id = name[:-5]
            if name.endswith(".json") and not self.dir.has_status(job_id):
                try:
                    pending.append(self._submitted_status(job_id))
                except JobNotFound:
                    continue
        return pending

    def _submitted_status(self, job_id: str, entry: str | None = None) -> JobStatus:
        """The job a file in incoming/ (``<id>.json``, or its claim) describes, as queued."""
        entry = entry or f"{job_id}.json"
        folder = self.dir.drop.folder
        try:
            fd, st = folder.open_checked(entry, Owners(os.geteuid(), os.stat(folder.fd).st_gid), 1 << 20)
            try:
                data = read_all(fd, 1 << 20)
            finally:
                os.close(fd)
            spec = parse_job(orjson.loads(data), entry, default_name=job_id)
        except (OSError, ValueError):
            raise JobNotFound(f"no job {job_id!r} in {self.dir.root}") from None
        if spec.id != job_id:
            raise JobNotFound(f"no job {job_id!r} in {self.dir.root}")
        # When it was submitted, as a manager will take it (intake.py): its file's time,
        # to the second, would list jobs of one second in no order.
        created = spec.submitted_at or time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(st.st_mtime))
        return new_status(spec, created)

    def status(self, job_id: str) -> JobStatus:
        """The job's status; a job not yet taken in by a manager shows as queued.
        Raises JobNotFound (saying why, when the job's file was rejected), CorruptStatus."""
        # A submitted job moves incoming/x -> incoming/.claimed~... -> status/, never back:
        # looking in that order (each look after the one before), then at status/ again,
        # finds it wherever it was between.
        try:
            return self.dir.read_status(job_id)
        except JobNotFound:
            pass
        try:
            return self._submitted_status(job_id)
        except JobNotFound:
            pass
        for entry in self.dir.drop.listing()[1]:  # listed only now: a claim made meanwhile is seen
            if entry.endswith(f"~{job_id}.json"):
                try:
                    return self._submitted_status(job_id, entry)
                except JobNotFound:
                    continue
        try:
            return self.dir.read_status(job_id)
        except JobNotFound:
            # A .jsonl is refused whole, under its name: an executor names its files after
            # their first job (pool/outbox.py).
            reason = self.dir.drop.rejection_reason(f"{job_id}.json") or \
                self.dir.drop.rejection_reason(f"{job_id}.jsonl")
            if reason:
                raise JobRejected(job_id, reason) from None
            raise

    def resolve(self, text: str) -> str:
        """The id of the one job whose id is ``text`` or starts with it (as git takes a
        commit's prefix). Raises AmbiguousId when several do; an id no job has is
        returned as it is, for ``status`` to say what became of it."""
        if self.dir.has_status(text) or not text:
            return text
        known = {*self.dir.status_ids(), *(s.id for s in self.submitted())}
        if text in known:
            return text
        matches = sorted(i for i in known if i.startswith(text))
        if len(matches) > 1:
            shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
            raise AmbiguousId(f"{text!r} is the start of {len(matches)} job ids ({shown}); give more of it")
        return matches[0] if matches else text

    def verdict(self, job_id: str, timeout: float = VERDICT_WAIT) -> JobStatus:
        """The job's status once a serving manager has taken it in, waiting up to
        ``timeout`` seconds for that (with no manager: at once). Raises JobRejected with
        the reason when its file was refused."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(job_id)
            if self.dir.has_status(job_id) or time.monotonic() >= deadline or not self.dir.manager_running():
                return status
            time.sleep(POLL_INTERVAL / 10)

    def rejections(self, since: float = 0.0) -> list[dict[str, Any]]:
        """Files refused since ``since`` (wall clock), oldest first: ``file``,
        ``rejected_at``, ``reason``, and ``name`` (its name in rejected/)."""
        return self.dir.drop.rejections(since)

    def wait(self, job_ids: Iterable[str], timeout: float | None = None) -> list[JobStatus]:
        """Block until every job is final; raises WaitTimeout or JobNotFound."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ids = list(job_ids)
        pending = list(ids)
        done: dict[str, JobStatus] = {}
        while True:
            for job_id in list(pending):
                status = self.status(job_id)
                if status.state.is_final:
                    done[job_id] = status
                    pending.remove(job_id)
            if not pending:
                return [done[j] for j in ids]
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"{len(pending)} job(s) not finished after {timeout:g}s: {', '.join(pending)}"
                                  + self.unserved())
            time.sleep(POLL_INTERVAL)

    def unserved(self) -> str:
        """``"; no manager is serving SPOOL"`` when none is, else "": why a job may wait."""
        return "" if self.dir.manager_running() else f"; no manager is serving {self.dir.root}"
