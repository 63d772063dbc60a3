"""``events.jsonl``: one line per state change of any job, the spool's central log.

Lines are appended with ``O_APPEND`` (a manager appends a loop turn's lines at once),
under an exclusive flock of the file, so they never interleave, and a write cut short (a
full disk) is taken back whole: no line is ever torn, or glued to the next. The manager keeps the log bounded: once
it passes ``max_bytes`` it becomes ``events.1.jsonl`` (replacing the one before) and a
new log starts, so the two together never hold much more than twice that.

``pool prune`` trims lines older than a cutoff (``trim``) by writing the logs anew and
renaming them into place. So that no line is lost to that, a trim holds the flock of
both files while it rewrites them: a writer that waited on a file trimmed meanwhile finds it unlinked
(``st_nlink == 0``) and opens the new one. A rotation takes the current log's lock
exclusively too, so it never meets a trim or another rotation.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

import orjson

from .locks import flock_within
from .model import encode_json
from .safeio import Folder, Owners, UnsafeFile, write_all

log = logging.getLogger(__name__)

TRIM_PATIENCE = 5.0  # seconds a writer that does not buffer (a client) waits for a trim
NAME = "events.jsonl"
PREVIOUS = "events.1.jsonl"


class EventLog:
    def __init__(self, folder: Folder, mode: Callable[[], int], buffered: bool = False,
                 max_bytes: int | None = None) -> None:
        self.folder = folder
        self.mode = mode  # the file's mode: group-readable in a shared spool
        self.buffered = buffered  # the manager appends a loop turn's events at once
        self.max_bytes = max_bytes  # only the manager rotates: it is the one steady writer
        self.lines: list[bytes] = []
        self._owners: Owners | None = None
        self.kept: int | None = None  # the log's descriptor, kept between flushes (``keep``)

    def append(self, event: dict[str, Any]) -> None:
        self.lines.append(encode_json(event) + b"\n")  # a reason may quote a name that is not UTF-8
        if not self.buffered:
            self.flush()

    def flush(self, patience: float | None = None, keep: bool = False) -> None:
        """Append the pending lines. A trim in progress holds the log: a buffered log (the
        manager's, an inline manager's) keeps its lines for the next flush rather than
        wait (a `pool prune` stopped with Ctrl-Z must not stop the jobs), unless given
        ``patience`` seconds (its last flush); an unbuffered one waits TRIM_PATIENCE.
        ``keep``: more lines are coming soon (jobs run): the log stays open for them, an
        open and a close fewer each turn; without it, it is closed (an idle descriptor
        open for writing would keep the filesystem from being remounted read-only)."""
        if not self.lines:
            if not keep:
                self.let_go()
            return
        data = b"".join(self.lines)
        self.lines.clear()
        if patience is None:
            patience = 0.0 if self.buffered else TRIM_PATIENCE
        try:
            self._owners = self._owners or Owners(os.stat(self.folder.fd).st_uid)
            with self._current(self._owners, patience, keep) as (fd, size):
                try:
                    write_all(fd, data)
                except OSError:
                    os.ftruncate(fd, size)  # nothing of it, rather than part of a line
                    raise
                if self.max_bytes is not None and size + len(data) > self.max_bytes:
                    self._rotate(fd)
        except BlockingIOError:
            if self.buffered and not patience:
                self.lines.insert(0, data)  # the next turn's flush tries again
                return
            log.warning("could not append %d event(s) to %s (held by a trim for %gs)", data.count(b"\n"), NAME,
                        patience)
        except (OSError, UnsafeFile) as exc:
            # The status documents are the truth; the central log is a record of them,
            # and a full disk (or a planted link) must not stop the jobs.
            log.warning("could not append %d event(s) to %s (%s)", data.count(b"\n"), NAME, exc)

    @contextlib.contextmanager
    def _current(self, owners: Owners, patience: float, keep: bool) -> Iterator[tuple[int, int]]:
        """The log to append to, under its lock (see the module's docstring; an append is
        one write of a few lines: held for microseconds), and its size, where the append
        starts; BlockingIOError if a trim holds it longer than ``patience`` seconds. The
        log kept from the flush before (``keep``) is used only while it still has that name:
        one rotated since (by us or by a writer before us) or trimmed (replaced by a
        rewritten one) is let go and the current one opened, so nothing is ever written
        behind anyone's back."""
        deadline = time.monotonic() + patience
        while True:
            kept, fd = self.kept is not None, self.kept if self.kept is not None else \
                self.folder.open_append(NAME, owners, self.mode())
            self.kept = None
            try:
                if not flock_within(fd, fcntl.LOCK_EX, deadline - time.monotonic()):
                    raise BlockingIOError(errno.EWOULDBLOCK, "events.jsonl is held by a trim")
                st = os.fstat(fd)
                # One kept from the last flush may have been rotated since (it is named
                # events.1.jsonl now) or trimmed (replaced: it has no name left).
                if st.st_nlink and (not kept or is_named(self.folder, NAME, fd)):
                    yield fd, st.st_size
                    if keep:
                        fcntl.flock(fd, fcntl.LOCK_UN)
                        self.kept, fd = fd, -1
                    return
            finally:
                if fd >= 0:
                    os.close(fd)  # the lock goes with it

    def let_go(self) -> None:
        """Close the log kept open, if one is."""
        if self.kept is not None:
            fd, self.kept = self.kept, None
            os.close(fd)

    def _rotate(self, fd: int) -> None:
        """Rename the log on ``fd`` to the previous one, if it is still the current log
        (the caller holds its lock: neither another rotation nor a trim runs meanwhile)."""
        if is_named(self.folder, NAME, fd):
            os.rename(NAME, PREVIOUS, src_dir_fd=self.folder.fd, dst_dir_fd=self.folder.fd)

    def trim(self, owners: Owners, before: str, keep: Collection[str] = (), dry_run: bool = False) -> int:
        """Drop the lines of both logs written before ``before`` (an ISO time, as pool
        writes them), except those of the jobs in ``keep``; returns how many were (or,
        with ``dry_run``, would be) dropped. A line that is not an event is kept: only
        what is known to be old goes."""
        held: list[tuple[str, int]] = []
        try:
            held.append((NAME, self._lock_current(owners)))
            # With the current log held, no rotation can run: the previous one stays put.
            with contextlib.suppress(FileNotFoundError):
                fd, _ = self.folder.open_checked(PREVIOUS, owners, 1 << 62)
                held.append((PREVIOUS, fd))
                fcntl.flock(fd, fcntl.LOCK_EX)
            dropped = 0
            # The previous log first: once the current one is replaced, its new file is not
            # held, and a writer may rotate it onto the previous one at once.
            for name, fd in reversed(held):
                lines = os.pread(fd, os.fstat(fd).st_size, 0).splitlines(keepends=True)
                kept = [line for line in lines if not written_before(line, before, keep)]
                dropped += len(lines) - len(kept)
                if len(kept) < len(lines) and not dry_run:
                    self.folder.write_atomic(name, b"".join(kept), self.mode())
            return dropped
        finally:
            for _, fd in held:
                os.close(fd)  # the locks go with them

    def _lock_current(self, owners: Owners) -> int:
        """The current log (created if a rotation just left none), held exclusively. A
        log rotated while the lock was awaited is let go and the new one taken."""
        while True:
            try:
                fd, _ = self.folder.open_checked(NAME, owners, 1 << 62)
            except FileNotFoundError:
                os.close(self.folder.open_append(NAME, owners, self.mode()))
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)
            if is_named(self.folder, NAME, fd):
                return fd
            os.close(fd)

    def read(self, owners: Owners, job_id: str | None = None) -> list[dict[str, Any]]:
        """The events still kept (the previous log, then the current one), of one job or all."""
        events = []
        for name in (PREVIOUS, NAME):
            if job_id is not None:
                events += self._read_of(name, owners, job_id)
                continue
            try:
                data = self.folder.read(name, owners, 1 << 62)
            except (OSError, UnsafeFile):
                continue
            events += parsed(data.splitlines())
        return events

    def _read_of(self, name: str, owners: Owners, job_id: str) -> list[dict[str, Any]]:
        """One job's events in log ``name``: its lines found in the file as the page cache
        holds it (mapped, not read: a full log is 32 MiB, and reading it took longer than
        the search), the others neither split nor parsed."""
        try:
            fd, st = self.folder.open_checked(name, owners, 1 << 62)
        except (OSError, UnsafeFile):
            return []
        try:
            if not st.st_size:
                return []
            with mmap.mmap(fd, st.st_size, prot=mmap.PROT_READ) as data:
                return [e for e in parsed(lines_naming(data, job_id)) if e.get("id") == job_id]
        except (OSError, ValueError):  # not mappable, or cut short meanwhile
            return []
        finally:
            os.close(fd)


def parsed(lines: Iterable[bytes]) -> list[dict[str, Any]]:
    """The events among ``lines`` (a line that is not one is skipped)."""
    events = []
    for line in lines:
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def lines_naming(data: mmap.mmap, job_id: str) -> Iterator[bytes]:
    """The lines of ``data`` that hold the event key of ``job_id`` as pool writes it
    (``"id":"<id>"``: an id needs no escaping), found by a byte search: one job's events
    out of a full log (hundreds of thousands of lines) without splitting or parsing the
    others (`pool status ID` on a spool of a million jobs: 0.43 s, now a few ms)."""
    needle = b'"id":"' + job_id.encode() + b'"'
    at = data.find(needle)
    while at >= 0:
        start = data.rfind(b"\n", 0, at) + 1
        end = data.find(b"\n", at)
        end = len(data) if end < 0 else end
        yield data[start:end]
        at = data.find(needle, end)


def is_named(folder: Folder, name: str, fd: int) -> bool:
    """Whether ``name`` in ``folder`` is the file open on ``fd``."""
    try:
        named = os.stat(name, dir_fd=folder.fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_ino, named.st_dev) == (held.st_ino, held.st_dev)


TIME_PREFIX = b'{"time":"'  # every event starts so: see Transition.event
TIME_LENGTH = len("2026-11-29T13:26:33.000000Z")


def written_before(line: bytes, before: str, keep: Collection[str] = ()) -> bool:
    """Whether an event line was written before ``before`` (ISO times of one fixed
    format compare as strings) by a job not in ``keep``; False for a line that is not
    an event."""
    if line.startswith(TIME_PREFIX) and line[len(TIME_PREFIX):len(TIME_PREFIX) + TIME_LENGTH] >= before.encode():
        return False  # the common case, decided without parsing the line
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(event, dict) or not isinstance(event.get("time"), str) or len(event["time"]) != TIME_LENGTH:
        return False
    return bool(event["time"] < before and event.get("id") not in keep)
