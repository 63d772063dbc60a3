"""A job's log (logs/<id>.log) kept to a size: ``pool serve --max-log-bytes N``.

Once the log passes N bytes, its worker cuts it down to its last N/2 (from a line start),
behind one line that says how much of the output came before:

    --- pool: 1234567 bytes of earlier output dropped (pool serve --max-log-bytes) ---

The cut is made in place, on the same file, so every descriptor the job and its children
hold on it (opened with O_APPEND) goes on appending at the new end. What they append while
the cut is made is copied after the kept tail; only a line a task writes itself in the
last instant between that copy and the truncation can be lost (a command's output, which
its worker copies into the log, waits for the cut: ``LogCap.cutting``). A follower (`pool logs -f`) that finds
that line changed reads the count in it to go on where it was.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
from typing import TYPE_CHECKING

from .safeio import UnsafeFile, write_all

if TYPE_CHECKING:
    from .model import JobStatus
    from .spool import SpoolDir

log = logging.getLogger(__name__)

MARK = b"--- pool: %d bytes of earlier output dropped (pool serve --max-log-bytes) ---\n"
MARK_PATTERN = re.compile(rb"--- pool: (\d{1,19}) bytes of earlier output dropped [^\n]*\n")
MIN_MAX_BYTES = 4096
HEAD_BYTES = len(MARK) + 20  # enough of a log's start to hold that line


def dropped_before(head: bytes) -> tuple[int, int]:
    """(bytes of output dropped before the kept part, the length of the line that says
    so) for a log that begins with ``head``; (0, 0) for one never cut."""
    found = MARK_PATTERN.match(head)
    return (int(found.group(1)), found.end()) if found else (0, 0)


def written(path: str) -> int:
    """Bytes ever written to the log at ``path``: its size, and what cuts dropped, less
    the line that says so; 0 for none, or for anything but a regular file (never waited
    on: a FIFO put in its place)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return 0
        dropped, mark_length = dropped_before(os.pread(fd, HEAD_BYTES, 0))
        return info.st_size - mark_length + dropped
    except OSError:
        return 0
    finally:
        os.close(fd)


def trim(fd: int, max_bytes: int) -> bool:
    """Cut the log open on ``fd`` down to its last ``max_bytes // 2`` bytes if it is
    longer than ``max_bytes``; True if it was cut."""
    size = os.fstat(fd).st_size
    if size <= max_bytes:
        return False
    # A descriptor of our own without O_APPEND: on Linux, pwrite on an O_APPEND one appends.
    rw = os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
    try:
        earlier, mark_length = dropped_before(os.pread(rw, HEAD_BYTES, 0))
        keep_from = size - max_bytes // 2
        kept = os.pread(rw, size - keep_from, keep_from)
        line_start = kept.find(b"\n") + 1
        if 0 < line_start < len(kept):
            kept, keep_from = kept[line_start:], keep_from + line_start
        data = MARK % (earlier + keep_from - mark_length) + kept
        os.pwrite(rw, data, 0)
        end, copied_to = len(data), size
        while (grown := os.fstat(rw).st_size) > copied_to:  # appended meanwhile: after the tail
            extra = os.pread(rw, grown - copied_to, copied_to)
            os.pwrite(rw, extra, end)
            end, copied_to = end + len(extra), copied_to + len(extra)
        os.ftruncate(rw, end)
    finally:
        os.close(rw)
    return True


def output_shown(cut: tuple[int, int], offset: int) -> int:
    """How many bytes of the job's whole output come before ``offset`` of a log version
    whose first line said ``cut`` (``dropped_before``)."""
    earlier, mark_length = cut
    return earlier + offset - mark_length


def resume_at(cut: tuple[int, int], shown: int) -> tuple[int, int]:
    """Where a follower that has shown ``shown`` bytes of the output goes on in a log
    found cut (its first line said ``cut``), and how many bytes it never saw: just
    after what it showed, or, if more was dropped, at the start of what is kept."""
    earlier, mark_length = cut
    if not mark_length:
        return 0, 0  # shortened by something else: read it again from the start
    return mark_length + max(0, shown - earlier), max(0, earlier - shown)


class LogCap:
    """Keeps the log on ``fd`` (fd 1, where a worker's job writes its output) within
    ``max_bytes``: checked after every ``max_bytes // 8`` bytes written through it, and
    when ``check`` is called (a task writes to fd 1 directly: the worker's flusher checks
    it every ``progress_interval``, 0.2 s, and when the attempt ends)."""

    def __init__(self, max_bytes: int, fd: int = 1) -> None:
        self.max_bytes = max_bytes
        self.fd = fd
        self.unchecked = 0
        # The worker's copying thread and its flusher both check; a command's output is
        # written under it too, so no write of it lands between a cut's last copy and its
        # truncation (one did, once in a full run of the suite:
        # test_following_a_log_that_is_cut_goes_on_where_it_was). A task's own writes to
        # fd 1 cannot wait for it: for them that instant stays (this module's docstring).
        self.cutting = threading.RLock()

    def wrote(self, count: int) -> None:
        self.unchecked += count
        if self.unchecked >= self.max_bytes // 8:
            self.check()

    def check(self) -> None:
        with self.cutting:
            self.unchecked = 0
            try:
                trim(self.fd, self.max_bytes)
            except OSError:
                pass  # a log that cannot be cut (a full disk, /dev/null) is left as it is


def attempt_header(status: JobStatus) -> bytes:
    """The line that separates an attempt's output from the one before, in the job's log."""
    return f"--- pool: attempt {status.attempt} of {status.max_attempts} ---\n".encode()


class JobLogs:
    """The logs of attempts whose runner writes nothing here (a detached executor's): the
    manager appends what they print, as it arrives (``Output``), each job's log open
    while its attempt runs, kept within ``max_bytes`` as a worker keeps its own."""

    def __init__(self, spool: SpoolDir, max_bytes: int | None) -> None:
        self.spool = spool
        self.max_bytes = max_bytes
        self.open: dict[str, tuple[int, LogCap | None]] = {}

    def begin(self, status: JobStatus) -> None:
        """An attempt begins: after the first, its output starts behind a line saying so."""
        if status.attempt > 1:
            self.append(status.id, attempt_header(status))

    def append(self, job_id: str, data: bytes) -> None:
        try:
            fd, cap = self.open.get(job_id) or self._open(job_id)
            write_all(fd, data)
        except (OSError, UnsafeFile) as exc:  # output that cannot be logged is dropped, never the job
            log.warning("job %s: %d bytes of output not logged (%s)", job_id, len(data), exc)
            return
        if cap is not None:
            cap.wrote(len(data))

    def _open(self, job_id: str) -> tuple[int, LogCap | None]:
        fd = self.spool.open_log(job_id)
        self.open[job_id] = (fd, LogCap(self.max_bytes, fd) if self.max_bytes else None)
        return self.open[job_id]

    def close(self, job_id: str) -> None:
        fd, cap = self.open.pop(job_id, (None, None))
        if fd is not None:
            if cap is not None:
                cap.check()
            os.close(fd)
