"""``status/index.final``: the documents of jobs that ended, in one file, so that a view
of every job (`pool status`, its ``--json``) reads one file rather than one per job.

    manager: a job ends (or is found ended at start) --> its status file read back -->
             a line appended:  [id, ino, size, mtime, state, created_at, name, group]<TAB><the document>
    reader:  os.listdir(status/) --> a job with a line whose ino, size and mtime are its
             file's (os.stat): the line's document, read from the index when it is
             shown or written (where it is checked to be the job's); any other: its file

A final document stays as it is until the job is retried (or removed), so each is
appended once, as it is on disk, byte for byte (read back from the file, never encoded
again). Every write of a status replaces its file with a new one (a new inode), so a
line stands for exactly the file it was read from; a line about a file since replaced,
removed, or made by hand is passed over and the file read, as it would be with no index
at all. The inode alone would not do: a retried job's file gets its old inode back at
once (tests/test_final_index.py). What the three cannot see is a change within one tick
of the file system's clock (a few milliseconds) that keeps the size and the inode: a file
rewritten in place by hand, or a job retried and ended again that fast. A `stat`
of a file the kernel no longer holds in memory costs a fraction of reading it: over
100,000 ended jobs, `pool status` took 1.8 s with the index and 9.6 s without
(benchmarks/README.md, status_listing.py --cold); with the files in memory, about as long.

The manager is the one writer: it appends a turn's lines in one write, and compacts the
file (keeps the lines that still stand for their file) at start and once as many lines
were appended as it then kept, a slice at a time, so its loop never waits on it. The
compacted file is renamed over the old: a reader has one or the other, whole. A line cut
short (a crash mid-write, a full disk) fails its size check and is passed over.

Who reads it: whoever may read status/*.json (a shared spool's group): it holds the same
documents and nothing more (a job's environment values are kept apart, in status/<id>.env).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import TYPE_CHECKING, NamedTuple

import orjson

from .model import DEFAULT_GROUP, State
from .rules import is_time
from .safeio import Folder, Owners, UnsafeFile, write_all

if TYPE_CHECKING:
    from .spool import SpoolDir

log = logging.getLogger(__name__)

NAME = "index.final"
MAX_INDEX_BYTES = 1 << 40  # a reader reads it through: a million jobs' documents are ~1 GB
SLICE = 256  # lines between looks at the clock
READ_PIECE = 1 << 20  # bytes a reader reads at a time
COMPACT_AFTER = 10_000  # lines appended since the last compaction before another is worth it
WORTH_COMPACTING = 1000  # jobs pruned at once for which `pool prune` asks the manager to compact
FINAL = frozenset(state.value for state in State if state.is_final)
Clock = Callable[[], float]


class Indexed(NamedTuple):
    """One job's line: what a table needs of the job, and where its document is in the
    index (``at``; -1: not known), read when it is written or shown (``document_at``)."""

    id: str
    ino: int
    size: int
    mtime: int
    state: str
    created_at: str
    name: str
    group: str
    at: int = -1

    def stands_for(self, st: os.stat_result) -> bool:
        """Whether the line is the document of the file ``st`` describes: the very file
        the manager read it from (and checked as any reader does, ``Folder.open_checked``)."""
        return st.st_ino == self.ino and st.st_size == self.size and st.st_mtime_ns == self.mtime


def line_of(job_id: str, data: bytes, st: os.stat_result) -> bytes | None:
    """The index line of job ``job_id``'s status document, read from the file ``st``
    describes, or None when it is no final document of that job that pool wrote (one on
    more than one line, say)."""
    if b"\n" in data or b"\t" in data or len(data) != st.st_size:
        return None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or doc.get("id") != job_id:
        return None
    head = [job_id, st.st_ino, st.st_size, st.st_mtime_ns, doc.get("state"), doc.get("created_at"),
            doc.get("name") or "", doc.get("group") or DEFAULT_GROUP]
    if indexed_of(head, data) is None or not is_time(head[5]):
        return None
    return orjson.dumps(head) + b"\t" + data + b"\n"


def indexed_of(head: object, data: bytes, at: int = -1) -> Indexed | None:
    """A line from its head (``[id, ino, size, mtime, state, created_at, name, group]``)
    and document; None when the head is not one, or the document is not as long as the
    file was (a line cut short, or glued to what came after). What a table uses before
    it decodes a row is of the type a status document's brief checks; that the time is
    one was checked when the line was written (``line_of``): checking it again cost a
    fifth of reading the index, and a time that is not one matches no ``--since``.
    ``at`` is where the document is in the index."""
    if type(head) is not list or len(head) != 8:
        return None
    job_id, ino, size, mtime, state, created_at, name, group = head
    if not (len(data) == size and state in FINAL and type(ino) is int and type(mtime) is int
            and type(job_id) is str and type(name) is str and type(group) is str and type(created_at) is str):
        return None
    return Indexed(job_id, ino, size, mtime, state, created_at, name, group, at)


def parse_line(line: bytes) -> Indexed | None:
    head, tab, data = line.rstrip(b"\n").partition(b"\t")
    try:
        return indexed_of(orjson.loads(head), data) if tab else None
    except orjson.JSONDecodeError:
        return None


LINE = re.compile(rb"([^\t\n]*)\t([^\n]*)\n")


def read_index(folder: Folder, owners: Owners) -> dict[str, Indexed]:
    """Every job's last line (none when there is no index, or none a reader may trust),
    with where its document is in the index, not the document: a view reads those it
    shows or writes, when it does (184 MB at 100,000 ended jobs held them all). Read a
    piece at a time, and split and parsed in as few calls as can be (a piece's heads in
    one; one each only when one is cut short): a call or two per line was half of `pool
    status --json`, and the file read whole, then copied line by line, a fifth."""
    found: dict[str, Indexed] = {}
    try:
        fd, _ = folder.open_checked(NAME, owners, MAX_INDEX_BYTES)
    except (OSError, UnsafeFile):
        return found
    try:
        at = 0
        for piece in pieces_of_lines(fd, MAX_INDEX_BYTES):
            add_lines(piece, found, at)
            at += len(piece)
    except (OSError, UnsafeFile):
        return {}
    finally:
        os.close(fd)
    return found


def document_at(fd: int, line: Indexed) -> bytes | None:
    """A line's document, read from the index open at ``fd``: the index is only ever
    appended to, or replaced whole (compacted), maybe since the line was read, and maybe
    with the same inode (tests/test_final_index.py). So what is read must be the job's
    document, of its size, beginning with its id as pool writes it; None where it is not,
    or where the line does not say (its job's file is read instead)."""
    if line.at < 0:
        return None
    data = os.pread(fd, line.size, line.at)
    return data if len(data) == line.size and data.startswith(b'{"id":%s,' % orjson.dumps(line.id)) else None


def pieces_of_lines(fd: int, max_bytes: int) -> Iterator[bytes]:
    """The file from ``fd`` in pieces of about READ_PIECE bytes, each cut at the end of a
    line; what follows the last newline (a line being appended) is left out. Raises
    UnsafeFile past ``max_bytes`` (a file may grow while it is read), OSError."""
    left = max_bytes + 1
    tail = b""
    while left > 0 and (chunk := os.read(fd, min(left, READ_PIECE))):
        left -= len(chunk)
        cut = chunk.rfind(b"\n") + 1
        if cut == 0:
            tail += chunk
        else:
            yield tail + chunk[:cut]
            tail = chunk[cut:]
    if left <= 0:
        raise UnsafeFile(f"grew over the limit of {max_bytes} bytes while being read")


def add_lines(piece: bytes, found: dict[str, Indexed], at: int = 0) -> None:
    """The lines of ``piece`` (at ``at`` in its file) to ``found``, each job's last one
    winning; a line that is not one is passed over."""
    lines: list[tuple[bytes, bytes]] = LINE.findall(piece)
    heads = list(map(itemgetter(0), lines))
    try:
        parsed = orjson.loads(b"[" + b",".join(heads) + b"]")
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, list) or len(parsed) != len(heads):  # one cut short spoils them all
        parsed = [loaded_or_none(head) for head in heads]
    if sum(len(head) + len(doc) + 2 for head, doc in lines) == len(piece):  # nothing passed over between lines
        ends = list(itertools.accumulate((len(head) + len(doc) + 2 for head, doc in lines), initial=at))[1:]
    else:
        ends = [at + match.end(2) + 1 for match in LINE.finditer(piece)]
    for head, (_, doc), end in zip(parsed, lines, ends, strict=True):
        indexed = indexed_of(head, doc, end - 1 - len(doc))
        if indexed is not None:
            found[indexed.id] = indexed


def loaded_or_none(head: bytes) -> object:
    try:
        return orjson.loads(head)
    except orjson.JSONDecodeError:
        return None


def lines_within(reader: io.BufferedReader, end: int) -> Iterator[bytes]:
    """The lines of the first ``end`` bytes of a file."""
    while end > 0 and (line := reader.readline(end)):
        end -= len(line)
        yield line


@dataclass
class Compaction:
    """A compaction under way: the lines of the index as it was when it began (``lines``,
    read a few at a time), those that still stand for their file written to ``temp``."""

    lines: Iterator[bytes]
    reader: io.BufferedReader
    temp: str
    temp_fd: int
    ids: set[str] | None = None  # the jobs of the lines kept, when asked for (at start)
    kept: int = 0
    appended: list[bytes] = field(default_factory=list)  # lines the manager appended meanwhile

    def close(self) -> None:
        self.reader.close()
        os.close(self.temp_fd)


class FinalIndex:
    """The manager's side: the jobs it heard end, appended once their file is read back."""

    def __init__(self, spool: SpoolDir) -> None:
        self.spool = spool
        self.noted: dict[str, None] = {}  # jobs to append, in the order they ended
        self.lines = 0  # in the index: kept by the last compaction, and appended since
        self.kept = 0
        self.compaction: Compaction | None = None
        self.began_at = 0.0  # when the last compaction began (wall clock)
        self.fd: int | None = None  # the index, kept open while jobs run
        self.failing = False  # the last append failed (a full disk): said once

    @property
    def folder(self) -> Folder:
        return self.spool.statuses

    @property
    def owners(self) -> Owners:
        return self.spool.owners

    @property
    def mode(self) -> int:
        return self.spool.file_mode

    def note(self, job_id: str) -> None:
        self.noted[job_id] = None

    def due(self) -> bool:
        return bool(self.noted) or self.compaction is not None or self.grown()

    def grown(self) -> bool:
        """Whether as many lines came since the last compaction as it kept (and enough to
        be worth one): half of them, or more, may stand for nothing by now."""
        return self.lines > 2 * self.kept + COMPACT_AFTER

    def open(self) -> set[str]:
        """At start: compact the index left by the last manager, whole; returns the jobs
        whose line still stands (any other final job found is to be noted)."""
        self.begin_compaction()
        job = self.compaction
        if job is None:
            return set()
        job.ids = set()
        self._compact_some(float("inf"), lambda: 0.0)
        return job.ids

    def flush(self) -> None:
        """Append the lines of every job noted (the manager stops: a compaction under way
        is left, to be done by the next one at its start)."""
        self._append_noted(float("inf"), lambda: 0.0)

    def compact_soon(self, asked_at: float) -> None:
        """Compact from the next turn on: many jobs were pruned at ``asked_at`` (wall
        clock), unless a compaction is under way or began since."""
        if self.compaction is None and asked_at >= self.began_at:
            self.begin_compaction()

    def step(self, deadline: float, clock: Clock, keep: bool = False) -> None:
        """Append the lines of the jobs noted, then compact a slice, until ``deadline``.
        ``keep``: more lines come soon (jobs run): the index stays open for them."""
        if self.noted:
            self._append_noted(deadline, clock)
        if self.compaction is None and self.grown():
            self.begin_compaction()
        if self.compaction is not None and clock() < deadline:
            self._compact_some(deadline, clock)
        if not keep:
            self.let_go()

    def let_go(self) -> None:
        """Close the index (an idle descriptor open for writing would keep the file system
        from being remounted read-only)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _append_noted(self, deadline: float, clock: Clock) -> None:
        lines = []
        for n, job_id in enumerate(list(self.noted)):
            if n % SLICE == SLICE - 1 and clock() >= deadline:
                break
            del self.noted[job_id]
            line = self._line(job_id)
            if line is not None:
                lines.append(line)
        if lines:
            self._append(b"".join(lines), len(lines))

    def _line(self, job_id: str) -> bytes | None:
        try:
            fd, st = self.folder.open_checked(f"{job_id}.json", self.owners)
        except (OSError, UnsafeFile):
            return None  # gone (removed, retried), or not one to index: read as it is
        try:
            return line_of(job_id, os.read(fd, st.st_size + 1), st)
        except OSError:
            return None
        finally:
            os.close(fd)

    def _append(self, data: bytes, count: int) -> None:
        try:
            if self.fd is None:
                self.fd = self.folder.open_append(NAME, self.owners, self.mode)
            size = os.fstat(self.fd).st_size
            try:
                write_all(self.fd, data)
            except OSError:
                os.ftruncate(self.fd, size)  # no line cut short for the next to be glued to
                raise
        except (OSError, UnsafeFile) as exc:
            if not self.failing:
                log.warning("could not add %d job(s) to status/%s (%s): `pool status` reads their files", count,
                            NAME, exc)
            self.failing = True
            return
        self.failing = False
        self.lines += count
        if self.compaction is not None:
            self.compaction.appended.append(data)

    def begin_compaction(self) -> None:
        self.began_at = time.time()
        try:
            fd, _ = self.folder.open_checked(NAME, self.owners, MAX_INDEX_BYTES)
        except FileNotFoundError:
            self.lines = self.kept = 0
            return
        except (OSError, UnsafeFile) as exc:
            log.warning("status/%s cannot be read (%s): it is made again", NAME, exc)
            with contextlib.suppress(OSError):  # a folder: appends fail too, and say so once
                self.folder.unlink(NAME)
            self.lines = self.kept = 0
            return
        end = os.fstat(fd).st_size  # what is appended after this is kept as appended, not read
        reader = open(fd, "rb")  # noqa: SIM115 (read a slice at a time, closed by the compaction)
        try:
            temp, temp_fd = self.folder.open_temp(NAME, self.mode)
        except OSError as exc:
            reader.close()
            log.warning("could not compact status/%s (%s)", NAME, exc)
            self.kept = self.lines  # not tried again until as many more lines come
            return
        self.compaction = Compaction(lines_within(reader, end), reader, temp, temp_fd)

    def _compact_some(self, deadline: float, clock: Clock) -> None:
        job = self.compaction
        assert job is not None
        try:
            kept = []
            for n, line in enumerate(job.lines):
                indexed = parse_line(line)
                if indexed is not None and self._stands(indexed):
                    kept.append(line if line.endswith(b"\n") else line + b"\n")
                    job.kept += 1
                    if job.ids is not None:
                        job.ids.add(indexed.id)
                if n % SLICE == SLICE - 1:
                    write_all(job.temp_fd, b"".join(kept))
                    kept.clear()
                    if clock() >= deadline:
                        return
            write_all(job.temp_fd, b"".join(kept) + b"".join(job.appended))
            self.folder.rename_temp(job.temp, NAME)
            self.let_go()  # what is appended next goes to the index now in place
            self.kept = job.kept
            self.lines = self.kept + sum(data.count(b"\n") for data in job.appended)
        except OSError as exc:
            log.warning("could not compact status/%s (%s)", NAME, exc)
            self.folder.unlink(job.temp)
            self.kept = self.lines  # not tried again until as many more lines come
        job.close()
        self.compaction = None

    def _stands(self, indexed: Indexed) -> bool:
        try:
            st = os.stat(f"{indexed.id}.json", dir_fd=self.folder.fd, follow_symlinks=False)
        except OSError:
            return False
        return indexed.stands_for(st)

    def close(self) -> None:
        self.let_go()
        if self.compaction is not None:
            self.compaction.close()
            self.folder.unlink(self.compaction.temp)
            self.compaction = None
