"""A job's locks: flock(2) on status/<id>.lock (held by the worker running the job, taken
briefly by every other writer of its status) and on status/<id>.inline (held by the
inline manager of a job run with no manager serving); and the start marker the lock
file holds.

A job's worker holds its lock from start to outcome, so the lock doubles as proof that
the job is alive, which survives the death of the manager that started it. Whether a
lock is held is asked by trying a shared lock for an instant; whoever takes a lock to
keep it (a worker starting a job, a manager starting) tries again for a moment, so such
a question never makes it think another process has it. (/proc/locks would answer
without touching the lock, but its first read costs a process 7-19 ms here.) flock is
taken directly: the filelock package (4.3) spends ~100 µs and ~470 Python calls per
acquire and release where flock takes 2 µs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator

from .errors import CorruptStatus, JobBusy, JobNotFound
from .safeio import Folder, Owners, UnsafeFile, not_allowed

LOCK_TIMEOUT = 2.0  # other writers hold a status lock for a read and a write: never long
LOCK_POLL = 0.005
MARKER_BYTES = 96  # "<attempt> <queued since> <pid> <pid start time>", padded: one pwrite, no truncate


LEASE_PATIENCE = 0.02  # seconds a worker keeps trying a job's lock: a question holds it for µs


def flock_within(fd: int, operation: int, patience: float) -> bool:
    """Take the flock ``operation`` (LOCK_SH or LOCK_EX) on ``fd``, trying for up to
    ``patience`` seconds; whether it was taken. The first tries come quickly (a holder
    that appends keeps it for microseconds), later ones every LOCK_POLL."""
    deadline = time.monotonic() + patience
    pause = 0.0001
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, LOCK_POLL)


class Lease:
    """A job's lock, held by this process: what lets its holder (the worker running the
    job) write the job's status without taking the lock again. Once let go it proves
    nothing, and the ledger refuses a write shown it: a thread that still reports after
    its attempt ended can never write over the attempt's outcome."""

    __slots__ = ("fd", "held")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            os.close(self.fd)


def is_held(opener: Callable[[], int]) -> bool:
    """Whether some process holds a flock on what ``opener`` opens: a shared lock tried
    for an instant (False when the file cannot be opened: nobody holds it)."""
    try:
        fd = opener()
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class JobLocks:
    def __init__(self, folder: Folder, owners: Callable[[], Owners]) -> None:
        self.folder = folder  # status/
        self.owners = owners  # who may have written the lock files: the spool's owner

    def lease(self, job_id: str, create: bool = False, patience: float = 0.0) -> Lease | None:
        """Take the job's lock, trying for ``patience`` seconds; None when another process
        holds it. Raises JobNotFound for a job with no lock file and no status (``create``
        makes the lock file, for a job known to exist: the worker that runs it)."""
        deadline = time.monotonic() + patience
        while (fd := self._open_lock(job_id, create)) is None:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.001)
        return Lease(fd)

    def _open_lock(self, job_id: str, create: bool) -> int | None:
        """The lock file is opened as it is; made only when missing, for a job that has a
        status (one open in the common case, no stat of the status)."""
        try:
            return self._try_flock(f"{job_id}.lock", create, job_id)
        except JobNotFound:
            if not self.folder.has(f"{job_id}.json"):
                raise
            return self._try_flock(f"{job_id}.lock", True, job_id)

    def _try_flock(self, name: str, create: bool, job_id: str) -> int | None:
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(name, flags | (os.O_CREAT if create else 0), 0o600, dir_fd=self.folder.fd)
        except FileNotFoundError:
            raise JobNotFound(f"no job {job_id!r} in {os.path.dirname(self.folder.path)}") from None
        except PermissionError:
            raise not_allowed(self.folder.path) from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO):
                raise CorruptStatus(f"status/{name} is not a regular file") from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    @contextlib.contextmanager
    def status_lock(self, job_id: str, timeout: float = LOCK_TIMEOUT) -> Iterator[Lease]:
        """Hold the job's lock for a read-modify-write; raises JobBusy after ``timeout``
        seconds (the job's worker holds it while the job runs)."""
        deadline = time.monotonic() + timeout
        while (lease := self.lease(job_id)) is None:
            if time.monotonic() >= deadline:
                raise JobBusy(f"job {job_id!r} is held by the process running it")
            time.sleep(LOCK_POLL)
        try:
            yield lease
        finally:
            lease.release()

    def supervise(self, job_id: str) -> int | None:
        """The inline manager's hold on a job (see pool.inline): like ``lease``, on
        ``status/<id>.inline``, for as long as it looks after the job."""
        return self._try_flock(f"{job_id}.inline", True, job_id)

    def _is_held(self, name: str) -> bool:
        """Whether some process holds the flock on status/<name>."""
        return is_held(lambda: os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                                           dir_fd=self.folder.fd))

    def is_supervised(self, job_id: str) -> bool:
        """True while an inline manager looks after the job."""
        return self._is_held(f"{job_id}.inline")

    def may_see(self, job_id: str) -> bool:
        """Whether this process can tell if the job's lock is held: a member of a shared
        spool cannot (the lock files are the spool owner's alone, so that nobody else can
        hold them and stall a job); the manager's user can."""
        return os.access(f"{job_id}.lock", os.R_OK, dir_fd=self.folder.fd) or not self.folder.has(f"{job_id}.lock")

    def is_leased(self, job_id: str) -> bool:
        """True while some process runs the job (holds its lock)."""
        return self._is_held(f"{job_id}.lock")

    # ------------------------------------------------------------ the start marker
    # The lock file holds which queued attempt a worker began, and in which process:
    # written under the lock before the attempt's code runs, so whoever finds the job later
    # (the local executor, a manager after a crash) knows whether that attempt began, even
    # if `running` was never written (it is written only after a few milliseconds) and
    # even if everything died meanwhile. An attempt is named by its number and the time
    # its status became queued (its `updated_at` then), which changes at every return to
    # queued (a retry, an attempt put back by a shutdown, `pool retry`): the marker of an
    # attempt put back never makes the next one count, and nothing needs to clear it.
    @staticmethod
    def mark_started(lock_fd: int, attempt: int, queued_since: str, pid: int, pid_started: int | None) -> None:
        line = f"{attempt} {queued_since} {pid} {pid_started or 0}".encode()
        os.pwrite(lock_fd, line.ljust(MARKER_BYTES - 1) + b"\n", 0)

    def began(self, job_id: str, attempt: int, queued_since: str | None = None) -> tuple[int, int | None] | None:
        """(pid, pid start time) of the worker that began the job's attempt ``attempt``
        queued at ``queued_since`` (any time, when None), or None if it never began."""
        try:
            data = self.folder.read(f"{job_id}.lock", self.owners(), MARKER_BYTES)
        except (OSError, UnsafeFile):
            return None
        fields = data.split()
        if len(fields) != 4 or not all(f.isdigit() for f in (fields[0], fields[2], fields[3])):
            return None
        if int(fields[0]) != attempt or (queued_since is not None and fields[1].decode() != queued_since):
            return None
        return int(fields[2]), int(fields[3]) or None
