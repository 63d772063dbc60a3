"""Who runs a job, and who may write its status: a lock per worker, and a job's own lock
for the rare writer that is not its worker.

    workers/<pid>-<start>.lock   a worker's lock, flock(2)ed for its whole life, and in it
                                 the start marker of its attempt: which job, which
                                 attempt (its number and when it was queued), and how far
                                 it got (claimed, running, ended)
    status/<id>.lock             a job's own lock: taken for a moment by any other writer
                                 of its status (a kill, a pause, the manager settling an
                                 attempt), made the first time one is needed

A worker claims an attempt in its marker first, then lets any writer that holds the
job's own lock finish (and looks at the other workers' markers: a worker of a manager
that died may have begun the very attempt), then reads the status; any other writer takes
the job's own lock first, then looks at the markers. Each side writes before it looks,
so of two that meet one always sees the other (as in Dekker's algorithm): a status is
never written by two at once, and a job never runs twice at once. A job is run (leased)
while a live worker's marker claims it or runs it: liveness stays per job, though a tiny
job now makes no lock file of its own (a file made is an inode, the dearest part of a
job's file work: benchmarks/README.md).

The marker outlives its worker: whoever finds the job later (the local executor, a
manager after a crash) knows whether that attempt began, even if `running` was never
written (it is written only after a few milliseconds) and even if everything died
meanwhile. An attempt is named by its number and the time its status became queued (its
`updated_at` then), which changes at every return to queued (a retry, an attempt put back
by a shutdown, `pool retry`): the marker of an attempt put back never makes the next one
count. A dead worker's lock file goes once what its marker says has been acted on.

Whether a lock is held is asked by trying a shared lock for an instant. flock is taken
directly: the filelock package (4.3) spends ~100 µs and ~470 Python calls per acquire and
release where flock takes 2 µs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .errors import CorruptStatus, JobBusy, JobNotFound
from .safeio import Folder, Owners, UnsafeFile, not_allowed

LOCK_TIMEOUT = 2.0  # other writers hold a status lock for a read and a write: never long
LOCK_POLL = 0.005
# "<how far> <job id> <attempt> <queued since> <pid> <pid start time>", padded: one pwrite,
# no truncate; how far it got is its first byte, rewritten alone.
MARKER_BYTES = 192
CLAIMED, RUNNING, ENDED = b"C", b"R", b"E"
WORKERS = "workers"

LEASE_PATIENCE = 0.02  # seconds a worker waits for another writer of a job: it holds it for µs


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
    """The right to write a job's status without taking its lock again: held by the
    worker running the job, or by a writer holding the job's own lock. Once let go it
    proves nothing, and the ledger refuses a write shown it: a thread that still reports
    after its attempt ended can never write over the attempt's outcome."""

    __slots__ = ("_let_go", "held")

    def __init__(self, let_go: Callable[[], None]) -> None:
        self._let_go = let_go
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._let_go()


def is_held(opener: Callable[[], int]) -> bool:
    """Whether some process holds a flock on what ``opener`` opens: a shared lock tried
    for an instant (False when the file cannot be opened: nobody holds it)."""
    try:
        fd = opener()
    except OSError:
        return False
    try:
        return held_on(fd)
    finally:
        os.close(fd)


def held_on(fd: int) -> bool:
    """Whether another descriptor holds an exclusive flock on ``fd``'s file; if not, ``fd``
    now holds a shared one (let go when it is closed)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    return False


@dataclass(frozen=True)
class Marker:
    """What a worker's lock file says of the attempt it claimed last."""

    stage: bytes  # CLAIMED (not begun: it may yet be skipped), RUNNING or ENDED
    job_id: str
    attempt: int
    queued_since: str
    pid: int
    pid_started: int | None
    live: bool  # its worker holds the lock: it is alive
    name: str  # the lock file's

    @property
    def holds(self) -> bool:
        """Its worker has the job: it claimed it or runs it."""
        return self.live and self.stage != ENDED

    @property
    def began(self) -> bool:
        return self.stage != CLAIMED


def marker_line(stage: bytes, job_id: str, attempt: int, queued_since: str, pid: int,
                pid_started: int | None) -> bytes:
    line = b"%s %s %d %s %d %d" % (stage, job_id.encode(), attempt, queued_since.encode(), pid, pid_started or 0)
    return line.ljust(MARKER_BYTES - 1) + b"\n"


def parse_marker(data: bytes, live: bool, name: str) -> Marker | None:
    fields = data.split()
    if len(fields) != 6 or fields[0] not in (CLAIMED, RUNNING, ENDED) or not all(
            f.isdigit() for f in (fields[2], fields[4], fields[5])):
        return None
    try:
        job_id, queued_since = fields[1].decode("ascii"), fields[3].decode("ascii")
    except UnicodeDecodeError:
        return None
    return Marker(fields[0], job_id, int(fields[2]), queued_since, int(fields[4]), int(fields[5]) or None, live, name)


class WorkerLock:
    """A worker's lock file, held from its start to its end, and the marker in it."""

    def __init__(self, locks: JobLocks, pid: int, pid_started: int | None) -> None:
        self.locks = locks
        self.pid, self.pid_started = pid, pid_started
        self.name = worker_lock_name(pid, pid_started)
        folder = locks.workers
        # Locked through a descriptor open for reading: between jobs the worker holds no
        # file open for writing (which would keep the filesystem from being remounted
        # read-only, tests/test_faults.py); the marker is written through a second one,
        # open while it names an attempt.
        self.fd = os.open(self.name, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600,
                          dir_fd=folder.fd)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # named after us alone: always free
            folder.sync(force=True)  # pool serve --durable: its markers are found after a power cut
        except BaseException:
            os.close(self.fd)
            raise
        self.marker_fd: int | None = None  # open for writing while the marker names an attempt
        # The other workers' lock files, kept open and listed again only when the folder
        # changed (a worker came or went): a claim then reads one marker per worker.
        self.others: dict[str, int] = {}
        self.listed: int | None = None  # the folder's mtime when it was listed

    @property
    def fds(self) -> list[int]:
        """Every descriptor it keeps (a child forked by a job must keep none)."""
        return [fd for fd in (self.fd, self.marker_fd, *self.others.values()) if fd is not None]

    def claim(self, job_id: str, attempt: int, queued_since: str, patience: float) -> Lease | None:
        """Claim the attempt for this worker; None if another process has the job (a
        writer holding the job's own lock longer than ``patience`` seconds, or another
        worker). The attempt has not begun until ``begin``."""
        if self.marker_fd is None:
            self.marker_fd = os.open(self.name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                     dir_fd=self.locks.workers.fd)
        self._mark(marker_line(CLAIMED, job_id, attempt, queued_since, self.pid, self.pid_started))
        # Written before looking: a writer that took the job's own lock before it looks
        # at the markers (it sees ours) or finishes before we go on.
        if not self.locks.wait_out_writers(job_id, patience) or self._another_has(job_id):
            self.unclaim()
            return None
        return Lease(self.end)

    def _another_has(self, job_id: str) -> bool:
        """Whether another live worker claims or runs the job. One read of each marker is
        enough here: a marker being written meanwhile is complete before its worker looks
        at ours, which was complete before we looked (each sees the other, or one does)."""
        self._list_others()
        wanted = job_id.encode()
        for name, fd in self.others.items():
            data = os.pread(fd, MARKER_BYTES, 0)
            if data.split(None, 2)[1:2] != [wanted]:
                continue  # another job, or none
            live = held_on(fd)
            if not live:
                fcntl.flock(fd, fcntl.LOCK_UN)  # the probe took it: its worker is dead
            marker = parse_marker(data, live, name)
            if marker is not None and marker.holds:
                return True
        return False

    def _list_others(self) -> None:
        """The folder's mtime moves with the kernel's coarse clock: a worker made in the
        same tick as the listing before may be missed here, but that worker, listing after
        it was made, sees this one (of two claimers, one still sees the other)."""
        folder = self.locks.workers
        changed = os.fstat(folder.fd).st_mtime_ns
        if changed == self.listed:
            return
        self.listed = changed
        names = {n for n in folder.listdir() if n.endswith(".lock") and not n.startswith(".") and n != self.name}
        for name in set(self.others) - names:
            os.close(self.others.pop(name))
        for name in names - set(self.others):
            try:
                self.others[name], _ = folder.open_checked(name, self.locks.owners(), MARKER_BYTES)
            except (OSError, UnsafeFile):
                continue  # gone meanwhile, or not a worker's: no worker of ours has a job through it

    def begin(self) -> None:
        """The attempt's code runs now: from here on it counts (pool serve --durable: even
        after a power cut, the marker on disk before the code runs)."""
        self._mark(RUNNING)
        if self.marker_fd is not None and self.locks.workers.durable:
            os.fdatasync(self.marker_fd)

    def unclaim(self) -> None:
        """It did not begin: the marker names no attempt any more."""
        self._mark(b" " * (MARKER_BYTES - 1) + b"\n", last=True)

    def end(self) -> None:
        """Its attempt is over (it began: the marker still says so)."""
        self._mark(ENDED, last=True)

    def _mark(self, data: bytes, last: bool = False) -> None:
        fd = self.marker_fd
        if fd is None:
            return  # no attempt named: nothing to say
        if last:
            self.marker_fd = None
        try:
            os.pwrite(fd, data, 0)
        finally:
            if last:
                os.close(fd)

    def close(self) -> None:
        """At the worker's end, its last attempt over: nobody needs the marker any more."""
        self.locks.workers.unlink(self.name)
        for fd in [*self.fds, *self.others.values()]:
            os.close(fd)
        self.marker_fd = None
        self.others.clear()


def worker_lock_name(pid: int, pid_started: int | None) -> str:
    return f"{pid}-{pid_started or 0}.lock"


class JobLocks:
    def __init__(self, folder: Folder, workers: Folder, owners: Callable[[], Owners],
                 has_status: Callable[[str], bool]) -> None:
        self.folder = folder  # status/
        self.workers = workers  # workers/
        self.owners = owners  # who may have written the lock files: the spool's owner
        self.has_status = has_status  # a status file, or a line in a record (pool/queuedbook.py)

    # ------------------------------------------------------------ the workers' markers
    def markers(self) -> tuple[list[Marker], bool]:
        """Every worker's marker, and whether all could be looked at (a member of a shared
        spool cannot: the lock files are the spool owner's alone, so that nobody else can
        hold one and stall a job)."""
        found, complete = [], True
        try:
            names = self.workers.listdir()
        except OSError:  # not ours to list
            return [], False
        for name in names:
            if not name.endswith(".lock") or name.startswith("."):
                continue
            try:
                fd, _ = self.workers.open_checked(name, self.owners(), MARKER_BYTES)
            except FileNotFoundError:
                continue  # gone meanwhile: its worker ended
            except (OSError, UnsafeFile):
                complete = False
                continue
            try:
                marker = parse_marker(stable_read(fd), held_on(fd), name)
            finally:
                os.close(fd)
            if marker is not None:
                found.append(marker)
        return found, complete

    def worker_has(self, job_id: str, but: str | None = None) -> bool:
        """True while a worker (but the one whose lock file is ``but``) claims or runs the job."""
        return any(m.holds and m.job_id == job_id and m.name != but for m in self.markers()[0])

    def is_leased(self, job_id: str) -> bool:
        """True while some process has the job: a worker, or whoever holds the job's own
        lock (a worker of pool before 2026-12-06 held it for the whole run: a manager
        detached from it and upgraded must not run its job again)."""
        return self.worker_has(job_id) or self._is_held(f"{job_id}.lock")

    def leased_ids(self) -> set[str]:
        """The jobs some worker has, all at once (one look at the markers)."""
        return {m.job_id for m in self.markers()[0] if m.holds}

    def may_see(self) -> bool:
        """Whether this process can tell which jobs the workers have: a member of a shared
        spool cannot; the manager's user can."""
        return self.markers()[1]

    def began(self, job_id: str, attempt: int, queued_since: str | None = None) -> tuple[int, int | None] | None:
        """(pid, pid start time) of the worker that began the job's attempt ``attempt``
        queued at ``queued_since`` (any time, when None), or None if none did."""
        for m in self.markers()[0]:
            if m.began and m.job_id == job_id and m.attempt == attempt and (
                    queued_since is None or m.queued_since == queued_since):
                return m.pid, m.pid_started
        return self._began_before(job_id, attempt, queued_since)

    def _began_before(self, job_id: str, attempt: int, queued_since: str | None) -> tuple[int, int | None] | None:
        """The start marker a worker of pool before 2026-12-06 wrote into the job's own
        lock file: "<attempt> <queued since> <pid> <pid start time>"."""
        try:
            data = self.folder.read(f"{job_id}.lock", self.owners(), 96)
        except (OSError, UnsafeFile):
            return None
        fields = data.split()
        if len(fields) != 4 or not all(f.isdigit() for f in (fields[0], fields[2], fields[3])):
            return None
        if int(fields[0]) != attempt or (queued_since is not None and fields[1].decode() != queued_since):
            return None
        return int(fields[2]), int(fields[3]) or None

    def worker_lock(self, pid: int, pid_started: int | None) -> WorkerLock:
        try:
            return WorkerLock(self, pid, pid_started)
        except FileNotFoundError:
            # A spool made by a version before workers/ (its manager makes what is missing
            # when it starts; `pool run` alone does not): made here, as its manager would.
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.workers.path, 0o700)
            return WorkerLock(self, pid, pid_started)

    def forget_dead_workers(self, keep: Callable[[Marker], bool]) -> int:
        """The lock files of dead workers, but those ``keep`` says to keep: their job still
        being seen to, or its status not yet saying what became of the attempt the marker
        names (the marker is then the only sign that it began: pool/adopted.py, ``settled``).
        Returns how many dead workers' files are kept."""
        kept = 0
        for m in self.markers()[0]:
            if m.live:
                continue
            if keep(m):
                kept += 1
            else:
                self.workers.unlink(m.name)
        return kept

    # ------------------------------------------------------------ a job's own lock
    def lease(self, job_id: str, patience: float = 0.0) -> Lease | None:
        """Take the job's own lock, trying for ``patience`` seconds; None when another
        process has the job (holds its lock, or is a worker that claims or runs it).
        Raises JobNotFound for a job with no lock file and no status."""
        deadline = time.monotonic() + patience
        while True:
            fd = self._open_lock(job_id)
            if fd is not None:
                # Taken before looking at the markers: a worker claiming the job now
                # either shows in them or waits for us (WorkerLock.claim).
                if not self.worker_has(job_id):
                    return Lease(functools.partial(os.close, fd))
                os.close(fd)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.001)

    def wait_out_writers(self, job_id: str, patience: float) -> bool:
        """Let a writer holding the job's own lock (if the job has one) finish; False if
        it holds it for longer than ``patience`` seconds."""
        try:
            fd = self._open_file(f"{job_id}.lock", False)
        except FileNotFoundError:
            return True  # none ever needed: no writer has it
        try:
            return flock_within(fd, fcntl.LOCK_EX, patience)
        finally:
            os.close(fd)

    def _open_lock(self, job_id: str) -> int | None:
        """The lock file is opened as it is; made only when missing, for a job that has a
        status (one open in the common case, no stat of the status)."""
        try:
            return self._try_flock(f"{job_id}.lock", False, job_id)
        except JobNotFound:
            if not self.has_status(job_id):
                raise
            return self._try_flock(f"{job_id}.lock", True, job_id)

    def _open_file(self, name: str, create: bool) -> int:
        """A lock file of status/, opened to be locked, never through a link, never a FIFO.
        Raises FileNotFoundError, NotAllowed, CorruptStatus."""
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            return os.open(name, flags | (os.O_CREAT if create else 0), 0o600, dir_fd=self.folder.fd)
        except PermissionError:
            raise not_allowed(self.folder.path) from None
        except FileNotFoundError:
            raise
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO):
                raise CorruptStatus(f"status/{name} is not a regular file") from None
            raise

    def _try_flock(self, name: str, create: bool, job_id: str) -> int | None:
        try:
            fd = self._open_file(name, create)
        except FileNotFoundError:
            raise JobNotFound(f"no job {job_id!r} in {os.path.dirname(self.folder.path)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    @contextlib.contextmanager
    def status_lock(self, job_id: str, timeout: float = LOCK_TIMEOUT) -> Iterator[Lease]:
        """Hold the job's lock for a read-modify-write; raises JobBusy after ``timeout``
        seconds (a worker has the job while it runs)."""
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

    def is_supervised(self, job_id: str) -> bool:
        """True while an inline manager looks after the job."""
        return self._is_held(f"{job_id}.inline")

    def _is_held(self, name: str) -> bool:
        """Whether some process holds the flock on status/<name>."""
        return is_held(lambda: os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                                       dir_fd=self.folder.fd))


def stable_read(fd: int) -> bytes:
    """The marker as one write left it: read until two reads agree (a read may meet a
    write halfway)."""
    data = os.pread(fd, MARKER_BYTES, 0)
    for _ in range(3):
        again = os.pread(fd, MARKER_BYTES, 0)
        if again == data:
            break
        data = again
    return data
