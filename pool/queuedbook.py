"""The queued statuses of a batch's jobs, many to a file: a job taken in from a ``.jsonl``
costs no file of its own until its status first changes (issue 23: half the file
operations of a tiny job).

    status/<token>~<k>.queued    the jobs of lines k*RECORD+1 .. (k+1)*RECORD of the batch
                                 claimed with <token> whose ids pool made (<token>-<line>):
        pool queued 2\\n           (``pool queued 1``: no line of briefs follows)
        <briefs>\\n                what a table needs of each job, as JSON (``encode``)
        <id>\\t<mark>\\t<status document>\\n     a line a job; mark: Q (it stands) or X (struck)

A record is written whole (a temp file renamed into place) by the manager, as it takes
the batch in, and never rewritten: only a mark changes, one byte, in place. A job of a
record has no ``status/<id>.json`` until its status is first written (it starts, it is
cancelled...): from then on that file is the job's truth and its line is not read. A
job that leaves the spool (``pool prune``, ``pool remove``, set aside) while its record
still stands is struck before its file goes, so its line never brings it back. The
manager removes a record once each of its jobs has a file or is struck, and never while
its batch is still being taken in (a claim taken in again after a crash finds the record
and writes none of its jobs twice).

Who reads a record: whoever reads status documents (it holds the same documents, with
the spool's file mode); whoever may remove a job writes its mark.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import orjson

from .rules import is_time
from .safeio import Folder, Owners, UnsafeFile, problem_with, read_all

if TYPE_CHECKING:
    from .model import JobStatus

RECORD = 256  # jobs (lines of the batch) a record holds at most
SUFFIX = ".queued"
HEADER = b"pool queued 2\n"
FIRST_HEADER = b"pool queued 1\n"  # records without briefs, as pool wrote them before 2026-12-06
STANDS, STRUCK = b"Q", b"X"
MAX_RECORD_BYTES = 1 << 31  # RECORD documents of a job file's size at most, and more
GENERATED = re.compile(r"([0-9a-f]{12})-([1-9][0-9]{0,9})\Z")  # an id pool made: intake's token, the line
NAMED = re.compile(r"[0-9a-f]{12}~[0-9]{1,8}\.queued\Z")


def record_of(job_id: str) -> str | None:
    """The name of the record a job with this id would be in (None: a name a user gave)."""
    found = place(job_id)
    return found[0] if found is not None else None


# A job of a record as a table first needs it, not checked (pool/finding.py's Brief): its
# id, state, creation time, name and group. A plain tuple: a million are made for a table.
Listed = tuple[str, str, str, str, str]


def encode(statuses: Sequence[JobStatus]) -> bytes:
    """A record of these jobs (all of one record: ``record_of`` says the same of each).

    Its briefs line lets a listing of a million queued jobs read what a table needs of
    each without parsing each document (1.6 s against 7 s, benchmarks/README.md): each
    job's line in the batch, where its mark is (counted from the first job's line), and
    its state, creation time, name and group, each an index into ``values``, which a batch
    mostly shares."""
    values: dict[str, int] = {}
    jobs, lines, at = [], [], 0
    for status in statuses:
        line = b"%s\t%s\t%s\n" % (status.id.encode(), STANDS, status.encode())
        jobs.append([int(status.id.rpartition("-")[2]), at + len(status.id) + 1,
                     *(values.setdefault(v, len(values)) for v in (status.state.value, status.created_at,
                                                                   status.spec.name or "", status.spec.queue_group))])
        lines.append(line)
        at += len(line)
    return HEADER + orjson.dumps({"values": list(values), "jobs": jobs}) + b"\n" + b"".join(lines)


def body_of(data: bytes) -> int | None:
    """Where a record's lines begin (None: not a record)."""
    if data.startswith(FIRST_HEADER):
        return len(FIRST_HEADER)
    if not data.startswith(HEADER):
        return None
    end = data.find(b"\n", len(HEADER))
    return None if end < 0 else end + 1


def lines_of(data: bytes, name: str) -> Iterator[tuple[str, bytes, bytes]]:
    """(id, mark, document) of each line of a record that is one of its own; one that is
    not (another record's id, no mark, cut short) is passed over."""
    body = body_of(data)
    if body is None:
        return
    for line in data[body:].split(b"\n")[:-1]:  # what follows the last newline was cut short
        raw_id, _, rest = line.partition(b"\t")
        mark, _, doc = rest.partition(b"\t")
        job_id = raw_id.decode("ascii", "replace")
        if mark in (STANDS, STRUCK) and doc and record_of(job_id) == name:
            yield job_id, mark, doc


def listed_in(data: bytes, name: str) -> list[Listed] | None:
    """The jobs whose lines stand in a record, as its briefs line says: read as a document
    would be, not checked, but it has a brief for each line, each of the record's own
    jobs, listed once, and each time is a time (--since parses it). None: the record has
    no briefs line, or one that does not hold (its lines are then read one by one)."""
    body = body_of(data)
    if body is None or data.startswith(FIRST_HEADER):
        return None
    token, first = token_of(name), int(name[:-len(SUFFIX)].rpartition("~")[2]) * RECORD
    try:
        briefs = orjson.loads(memoryview(data)[len(HEADER):body])
        values = briefs["values"]
        if len(briefs["jobs"]) != data.count(b"\n", body):  # a brief a line, none left out
            return None
        listed, last, times = [], first, set()
        for line, mark_at, state, created_at, job_name, group in briefs["jobs"]:
            if type(line) is not int or type(mark_at) is not int or not last < line <= first + RECORD or \
                    not 0 <= mark_at < len(data) - body:
                return None
            last = line
            if data[body + mark_at] == STANDS[0]:
                listed.append((f"{token}-{line}", values[state], values[created_at], values[job_name], values[group]))
                times.add(created_at)
    except (orjson.JSONDecodeError, ValueError, TypeError, KeyError, IndexError):
        return None
    if not all(isinstance(value, str) for value in values) or not all(is_time(values[t]) for t in times):
        return None
    return listed


class QueuedBook:
    """The records of one spool's status/ folder, as any process reads them, with the one
    record last read kept (its lines never change but for their marks, each read again),
    so that a manager or a worker going through a batch job by job reads each record once."""

    def __init__(self, folder: Folder, owners: Callable[[], Owners], mode: Callable[[], int]) -> None:
        self.folder = folder
        self._owners = owners
        self._mode = mode
        self._kept: tuple[str, int, bytes] | None = None  # (name, inode, data): the record last read
        # The manager's: for each record, which of its jobs (by line) still have no file
        # of their own, and the records none of whose jobs do (to go, once looked at).
        self._waiting: dict[str, bytearray] = {}
        self._left: dict[str, int] = {}
        self.emptied: set[str] = set()

    def close(self) -> None:
        self._kept = None

    def file(self, statuses: Sequence[JobStatus]) -> tuple[str, bytes, int]:
        """(name, content, mode) of the record of these jobs, for ``Folder.write_group``."""
        name = record_of(statuses[0].id)
        assert name is not None and all(record_of(s.id) == name for s in statuses)
        return name, encode(statuses), self._mode()

    def exists(self, job_id: str) -> bool:
        """Whether the record this job would be in is there (whatever its lines say)."""
        name = record_of(job_id)
        return name is not None and self.folder.has(name)

    def find(self, job_id: str) -> bytes | None:
        """The queued status document of a job whose line stands, or None: no record, no
        line of it, struck. Raises UnsafeFile (a record that is a link, a FIFO, another
        user's), OSError."""
        name = record_of(job_id)
        if name is None:
            return None
        try:
            fd, st = self.folder.open_checked(name, self._owners(), MAX_RECORD_BYTES)
        except FileNotFoundError:
            return None
        try:
            kept = self._kept
            if kept is not None and kept[0] == name and kept[1] == st.st_ino:
                data = kept[2]  # its lines are as they were: only a mark may have changed
            else:
                data = read_all(fd, MAX_RECORD_BYTES)
                self._kept = (name, st.st_ino, data)
            mark_at = mark_of(data, job_id)
            if mark_at is None:
                return None
            end = data.find(b"\n", mark_at)
            if end < 0 or data[mark_at + 1:mark_at + 2] != b"\t" or os.pread(fd, 1, mark_at) != STANDS:
                return None
            return data[mark_at + 2:end]
        finally:
            os.close(fd)

    def names(self) -> list[str]:
        return [name for name in self.folder.listdir() if NAMED.match(name)]

    def standing(self) -> Iterator[tuple[str, bytes]]:
        """(id, document) of every job whose line stands, record by record; a record that
        cannot be read is passed over."""
        for name in self.names():
            try:
                yield from self._standing_in(name)
            except (OSError, UnsafeFile):
                continue

    def listed(self) -> tuple[list[Listed], dict[str, bytes]]:
        """Every job whose line stands, record by record: as its record's briefs line has
        it, where that line holds; else its document, by id. A record that cannot be read
        is passed over. The briefs come last line of a batch first: its jobs share their
        creation time, and a table, newest first, shows the batch's end, not a record the
        folder happened to list first."""
        briefs: list[Listed] = []
        documents: dict[str, bytes] = {}
        for name in sorted(self.names(), key=batch_order, reverse=True):
            try:
                data = self.folder.read(name, self._owners(), MAX_RECORD_BYTES)
            except (OSError, UnsafeFile):
                continue
            listed = listed_in(data, name)
            if listed is None:
                documents.update((job_id, doc) for job_id, mark, doc in lines_of(data, name) if mark == STANDS)
            else:
                briefs += reversed(listed)
        return briefs, documents

    def ids(self, name: str) -> list[str]:
        """The ids of a record's jobs whose lines stand ([] when it cannot be read)."""
        try:
            return [job_id for job_id, _ in self._standing_in(name)]
        except (OSError, UnsafeFile):
            return []

    def _standing_in(self, name: str) -> list[tuple[str, bytes]]:
        """(id, document) of each job whose line stands in record ``name``. Raises
        UnsafeFile, OSError."""
        data = self.folder.read(name, self._owners(), MAX_RECORD_BYTES)
        return [(job_id, doc) for job_id, mark, doc in lines_of(data, name) if mark == STANDS]

    def strike(self, job_id: str) -> None:
        """Strike a job's line, if its record stands and has it: from now on the record
        says nothing of it. A record no reader would read is left as it is. Raises
        OSError (a record this process may not write: the job must not be removed)."""
        name = record_of(job_id)
        if name is None:
            return
        try:
            fd = os.open(name, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self.folder.fd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENXIO, errno.EISDIR):
                return  # none, or one no reader reads (a link, a FIFO...)
            raise
        try:
            if problem_with(os.fstat(fd), self._owners(), MAX_RECORD_BYTES) is not None:
                return  # another's, say: no reader reads it either
            data = read_all(fd, MAX_RECORD_BYTES)
            mark_at = mark_of(data, job_id)
            if mark_at is not None and data[mark_at:mark_at + 1] == STANDS:
                os.pwrite(fd, STRUCK, mark_at)
                if self.folder.durable:
                    os.fdatasync(fd)
        finally:
            os.close(fd)

    def remove(self, name: str) -> None:
        self.folder.unlink(name)

    # ------------------------------------------------------------ the manager's
    def take_stock(self, set_aside: Callable[[str, str], None]) -> None:
        """At a manager's start: which jobs of each record have no file of their own yet.
        A record no reader reads (a link, a FIFO, another user's) is ``set_aside``
        (name, why) whole: its jobs are none of the spool's."""
        for name in self.names():
            try:
                standing = self._standing_in(name)
            except UnsafeFile as exc:
                set_aside(name, f"status/{name} {exc}")
                continue
            except OSError:
                continue
            waiting = [job_id for job_id, _ in standing if not self.folder.has(f"{job_id}.json")]
            for job_id in waiting:
                self.arrived(job_id)
            if not waiting:
                self.emptied.add(name)

    def arrived(self, job_id: str) -> None:
        """A job of a record is queued from its line (taken in, or found at start)."""
        found = place(job_id)
        if found is None:
            return
        name, line = found
        marks = self._waiting.setdefault(name, bytearray(RECORD))
        if not marks[line]:
            marks[line] = 1
            self._left[name] = self._left.get(name, 0) + 1
            self.emptied.discard(name)

    def moved(self, job_id: str) -> None:
        """A job's status changed, or the job left: a job of a record has its file now
        (or is struck), and its record may be done with."""
        found = place(job_id) if self._waiting else None
        if found is None:
            return
        name, line = found
        marks = self._waiting.get(name)
        if marks is None or not marks[line]:
            return
        marks[line] = 0
        self._left[name] -= 1
        if not self._left[name]:
            del self._waiting[name], self._left[name]
            self.emptied.add(name)

    def remove_emptied(self, keep: Callable[[str], bool]) -> None:
        """Remove the records none of whose jobs stand in them any more, but those ``keep``
        says to keep (their batch still taken in: a claim taken in again after a crash
        must find them). Each is looked at first: one whose line stands for a job with no
        file stays (for the next manager's start to see to)."""
        for name in list(self.emptied):
            if keep(name):
                continue
            self.emptied.discard(name)
            if all(self.folder.has(f"{job_id}.json") for job_id in self.ids(name)):
                self.remove(name)


def mark_of(data: bytes, job_id: str) -> int | None:
    """Where the mark of a job's line is in a record's ``data`` (None: no line of it)."""
    key = b"\n%s\t" % job_id.encode()
    at = data.find(key, len(HEADER) - 1)
    return None if at < 0 else at + len(key)


def place(job_id: str) -> tuple[str, int] | None:
    """The record a job would be in, and its line's place in it (None: an id a user gave)."""
    found = GENERATED.match(job_id)
    if found is None:
        return None
    line = int(found.group(2)) - 1
    return f"{found.group(1)}~{line // RECORD}{SUFFIX}", line % RECORD


def batch_order(name: str) -> tuple[str, int]:
    """A record's place among its batch's (its token, then its k)."""
    token, _, k = name[:-len(SUFFIX)].partition("~")
    return token, int(k)


def token_of(name: str) -> str:
    return name.partition("~")[0]
