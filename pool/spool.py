"""The spool directory: its layout and permissions, job statuses, their locks, and the
one-manager guard. (incoming/ and rejected/ are pool/dropzone.py's, requests/ is
pool/requests.py's, events.jsonl is pool/events.py's; every file is opened the way
pool/safeio.py says.)

    spool/
      incoming/          drop zone (*.json, *.jsonl); dot-files, *.tmp and *.part are ignored
        .claimed~<token>~<name>   a file taken by rename, until its jobs have statuses
      status/<id>.json   the live status of one job, replaced atomically; <id>.lock beside it
                         (the job's lock, holding the start marker of its attempt) and
                         <id>.inline (held by an inline run's supervisor)
      logs/<id>.log      what the job printed
      rejected/<file>    a refused input, untouched, with <file>.error.json saying why
      requests/          kill and retry requests for the manager (<kind>-<id>)
      events.jsonl       one line per state change
      manager.pid        the serving manager's pid (the guard itself is a lock on spool/)

Every document is written to a temp file in the same folder and then renamed, so a
reader never needs a lock and never sees a partial document. Writers of a status take
its lock (flock on status/<id>.lock, see ``lease``) so two of them never interleave a
read-modify-write; a job's worker holds it for the job's whole run.

A private spool is 0700. A shared one (``pool serve --group G``) is 2750, with incoming/
and requests/ 2770: members drop jobs and requests and read statuses and logs; only the
manager's user writes status/, logs/, rejected/, the locks and events.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .dropzone import DropZone
from .errors import CorruptStatus, JobBusy, JobNotFound, ManagerRunning, SpoolError
from .events import EventLog
from .model import ID_PATTERN, JobStatus
from .procs import file_key, flock_holders
from .requests import RequestBox
from .safeio import Folder, Owners, UnsafeFile

log = logging.getLogger(__name__)

DIRS = ("incoming", "status", "logs", "rejected", "requests")
# Shared: setgid, so what is made inside belongs to the group; the drop folders are also
# sticky (like /tmp), so a member cannot rename or delete another member's files there
# (a renamed request would otherwise act with its first author's rights).
SHARED_MODES = {"": 0o2750, "incoming": 0o3770, "requests": 0o3770, "status": 0o2750, "logs": 0o2750,
                "rejected": 0o2750}
LOCK_TIMEOUT = 2.0  # other writers hold a status lock for a read and a write: never long
LOCK_POLL = 0.005
GUARD_PATIENCE = 0.3  # a probe of a pre-/proc/locks kernel holds the guard for microseconds
MARKER_BYTES = 48  # "<attempt> <pid> <pid start time>", padded: one pwrite, no truncate


def open_folder(path: str | os.PathLike[str], dir_fd: int | None = None,
                shown: os.PathLike[str] | str | None = None) -> int:
    """A folder of the spool, opened without following a link. Raises SpoolError."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise SpoolError(f"{shown or path} is not a directory (a symlink or a file): move it away") from None
        raise


def is_held(st: os.stat_result, opener: Callable[[], int]) -> bool:
    """Whether some process holds a flock on the file behind ``st``, asked without taking
    it (/proc/locks); only where the kernel will not say, by trying a shared lock on what
    ``opener`` opens (which could, for a microsecond, be in a taker's way)."""
    holders = flock_holders()
    if holders is not None:
        return file_key(st) in holders
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


def check_folder(fd: int, path: Path, me: int, group_gid: int | None) -> None:
    """Whoever can write into the spool can run code as us, or make us write through their
    links: a folder must be ours, not writable by others, and writable by its group only in
    a shared spool (the manager then sets the modes). Raises SpoolError."""
    st = os.fstat(fd)
    if st.st_uid != me:
        raise SpoolError(f"{path} is owned by uid {st.st_uid}, not by this user (uid {me}), who could then "
                         f"replace what pool writes there; serve it as its owner, or: chown {me} {path}")
    if st.st_mode & stat.S_IWOTH:
        raise SpoolError(f"{path} is writable by every user (mode {stat.S_IMODE(st.st_mode):o}), so anyone "
                         f"could run code as this user; run: chmod o-w {path}")
    if st.st_mode & stat.S_IWGRP and group_gid is None:
        raise SpoolError(f"{path} is writable by its group (gid {st.st_gid}); run chmod g-w {path}, "
                         "or serve with --group naming that group")


def check_parents(root: Path) -> None:
    """Whoever may rename entries in a folder above the spool can swap the spool for one of
    their own: every folder above it must be root's or ours, and writable by others only if
    sticky (as /tmp is), as OpenSSH's StrictModes asks of a home directory."""
    me = os.geteuid()
    for parent in root.resolve().parents:
        st = os.stat(parent)
        if st.st_uid not in (0, me):
            raise SpoolError(f"{parent} (a folder above the spool) is owned by uid {st.st_uid}, who could swap the "
                             "spool for another; keep the spool in a folder of yours or root's")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            raise SpoolError(f"{parent} (a folder above the spool) is writable by others (mode "
                             f"{stat.S_IMODE(st.st_mode):o}) without the sticky bit: they could swap the spool")


class SpoolDir:
    """Paths and file operations of one spool directory."""

    def __init__(self, root: str | os.PathLike[str], buffer_events: bool = False) -> None:
        self.root = Path(root).absolute()
        self.incoming = self.root / "incoming"
        self.status_dir = self.root / "status"
        self.logs = self.root / "logs"
        self.rejected = self.root / "rejected"
        self.requests = self.root / "requests"
        self.pid_path = self.root / "manager.pid"
        self.top = Folder(self.root)
        self.statuses = Folder(self.status_dir)
        self.log_folder = Folder(self.logs)
        self.drop = DropZone(self.incoming, self.rejected)
        self.box = RequestBox(self.requests)
        self.events = EventLog(self.top, lambda: self.file_mode, buffered=buffer_events)
        self._owners: Owners | None = None
        self._file_mode: int | None = None

    # ------------------------------------------------------------ layout and permissions
    def create(self, group_gid: int | None = None, check: bool = False) -> None:
        """Create whatever is missing: private (0700), or shared with one group. With
        ``check`` (the manager), first make sure every folder is one only we control (see
        ``check_folder``), before anything is created in it; the folders stay open, so
        what is used afterwards is what was checked. Raises SpoolError."""
        me = os.geteuid()
        try:
            if check:
                check_parents(self.root)
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            root_fd = open_folder(self.root)
            folders = {"": root_fd}
            if check:
                check_folder(root_fd, self.root, me, group_gid)
            for name in DIRS:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o700, dir_fd=root_fd)
                folders[name] = open_folder(name, root_fd, self.root / name)
                if check:
                    check_folder(folders[name], self.root / name, me, group_gid)
        except SpoolError:
            raise
        except OSError as exc:
            raise SpoolError(f"cannot create spool {self.root}: {exc.strerror}") from None
        if group_gid is not None:
            for name, fd in folders.items():
                os.fchown(fd, -1, group_gid)
                os.fchmod(fd, SHARED_MODES[name])
        if check:
            for folder, name in ((self.top, ""), (self.statuses, "status"), (self.log_folder, "logs"),
                                 (self.drop.folder, "incoming"), (self.drop.rejected, "rejected"),
                                 (self.box.folder, "requests")):
                folder.use(folders.pop(name))
        for fd in folders.values():
            os.close(fd)

    def exists(self) -> bool:
        return self.status_dir.is_dir()

    @property
    def owners(self) -> Owners:
        """Who may have written the spool's own files: its owner only."""
        if self._owners is None:
            self._owners = Owners(os.fstat(self.top.fd).st_uid)
        return self._owners

    def submitters(self, group_gid: int | None) -> Owners:
        """Who may own what is dropped into incoming/ and requests/: us, and the group."""
        return Owners(os.geteuid(), group_gid)

    @property
    def file_mode(self) -> int:
        """Statuses and logs of a shared spool are readable by its group."""
        if self._file_mode is None:
            shared = os.fstat(self.statuses.fd).st_mode & stat.S_IRGRP
            self._file_mode = 0o640 if shared else 0o600
        return self._file_mode

    def status_path(self, job_id: str) -> Path:
        return self.status_dir / f"{job_id}.json"

    def log_path(self, job_id: str) -> Path:
        return self.logs / f"{job_id}.log"

    def open_log(self, job_id: str) -> int:
        """The job's log for appending (never through a link planted there)."""
        return self.log_folder.open_append(f"{job_id}.log", self.owners, self.file_mode)

    # ------------------------------------------------------------ status documents
    def write_status(self, status: JobStatus) -> None:
        """Replace a status document whole; callers that may race hold its lock."""
        self.statuses.write_atomic(f"{status.id}.json", status.encode(), self.file_mode)

    def read_status(self, job_id: str) -> JobStatus:
        """Raises JobNotFound when the job has no status document, CorruptStatus when it
        is not a document pool could have written."""
        name = f"{job_id}.json"
        try:
            data = self.statuses.read(name, self.owners)
        except FileNotFoundError:
            raise JobNotFound(f"no job {job_id!r} in {self.root}") from None
        except UnsafeFile as exc:
            raise CorruptStatus(f"status/{name} {exc}") from None
        status = JobStatus.decode(data, f"status/{name}")
        if status.id != job_id:
            raise CorruptStatus(f"status/{name}: holds job {status.id!r}")
        return status

    def read_trusted(self, job_id: str) -> JobStatus | None:
        """The job's status, or None when it has none, or one that cannot be trusted
        (which is then set aside, so it is never read again)."""
        try:
            return self.read_status(job_id)
        except JobNotFound:
            return None
        except CorruptStatus as exc:
            self.set_aside(job_id, str(exc))
            return None

    def has_status(self, job_id: str) -> bool:
        try:
            os.stat(f"{job_id}.json", dir_fd=self.statuses.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def status_ids(self) -> list[str]:
        return [n[:-5] for n in self.statuses.listdir()
                if n.endswith(".json") and not n.startswith(".") and ID_PATTERN.match(n[:-5])]

    def iter_statuses(self, cache: dict[str, tuple[int, JobStatus]] | None = None) -> Iterator[JobStatus]:
        """Every readable status; one deleted or broken meanwhile is skipped. With a
        ``cache`` (kept by the caller between calls, as a live view does), a document is
        parsed again only when its file changed: every write replaces the file, so a new
        inode or mtime means new content, and a stat costs far less than a parse."""
        for job_id in self.status_ids():
            name = f"{job_id}.json"
            try:
                if cache is not None:
                    st = os.stat(name, dir_fd=self.statuses.fd, follow_symlinks=False)
                    stamp = st.st_ino ^ st.st_mtime_ns
                    known = cache.get(name)
                    if known is not None and known[0] == stamp:
                        yield known[1]
                        continue
                status = self.read_status(job_id)
            except (OSError, JobNotFound, CorruptStatus):
                continue
            if cache is not None:
                cache[name] = (stamp, status)
            yield status

    def raw_statuses(self) -> list[bytes]:
        """Every readable status document as it is on disk, unparsed."""
        docs = []
        for job_id in self.status_ids():
            try:
                docs.append(self.statuses.read(f"{job_id}.json", self.owners))
            except (OSError, UnsafeFile):
                continue
        return docs

    def set_aside(self, job_id: str, why: str) -> None:
        """A status document that cannot be trusted goes to rejected/, with why, so the
        job it stood for ends there and nothing reads it again."""
        log.error("status/%s.json set aside: %s", job_id, why)
        self.drop.reject_from(self.statuses, f"{job_id}.json", f"{job_id}.status.json", why)

    # ------------------------------------------------------------ locks
    def lease(self, job_id: str, create: bool = False) -> int | None:
        """Take the job's lock without waiting; returns its descriptor (closing it lets
        go), or None when another process holds it. Raises JobNotFound for a job with
        no lock file and no status (``create`` makes the lock file, for a job known to
        exist: the worker that runs it).

        A job's worker holds this lock from start to outcome, so the lock doubles as
        proof that the job is alive, which survives the death of the manager that
        started it; every other writer of the job's status takes it briefly
        (``status_lock``). It is flock(2) on ``status/<id>.lock``, taken directly: the
        filelock package (4.3) spends ~100 µs and ~470 Python calls per acquire and
        release where flock takes 2 µs."""
        return self._try_flock(f"{job_id}.lock", create or self.has_status(job_id), job_id)

    def _try_flock(self, name: str, create: bool, job_id: str) -> int | None:
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(name, flags | (os.O_CREAT if create else 0), 0o600, dir_fd=self.statuses.fd)
        except FileNotFoundError:
            raise JobNotFound(f"no job {job_id!r} in {self.root}") from None
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
    def status_lock(self, job_id: str, timeout: float = LOCK_TIMEOUT) -> Iterator[int]:
        """Hold the job's lock for a read-modify-write (yields its descriptor); raises
        JobBusy after ``timeout`` seconds (the job's worker holds it while the job runs)."""
        deadline = time.monotonic() + timeout
        while (fd := self.lease(job_id)) is None:
            if time.monotonic() >= deadline:
                raise JobBusy(f"job {job_id!r} is held by the process running it")
            time.sleep(LOCK_POLL)
        try:
            yield fd
        finally:
            os.close(fd)

    def supervise(self, job_id: str) -> int | None:
        """The inline supervisor's hold on a job (see pool.inline): like ``lease``, on
        ``status/<id>.inline``, for as long as it looks after the job."""
        return self._try_flock(f"{job_id}.inline", True, job_id)

    def _is_held(self, name: str) -> bool:
        """Whether some process holds the flock on status/<name>, asked without taking
        it (/proc/locks): a probe that took the lock, even shared and for a microsecond,
        could make a worker starting the job that very moment think it runs elsewhere."""
        try:
            st = os.stat(name, dir_fd=self.statuses.fd, follow_symlinks=False)
        except (FileNotFoundError, PermissionError):
            return False
        return is_held(st, lambda: os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                                           dir_fd=self.statuses.fd))

    def is_supervised(self, job_id: str) -> bool:
        """True while an inline supervisor looks after the job."""
        return self._is_held(f"{job_id}.inline")

    def is_leased(self, job_id: str) -> bool:
        """True while some process runs the job (holds its lock)."""
        return self._is_held(f"{job_id}.lock")

    # ------------------------------------------------------------ the start marker
    # The lock file holds which attempt was started, by which process: written under the
    # lock before the attempt's code runs, so whoever finds the job later knows whether
    # that attempt began, even if `running` was never written (it is written only after
    # a few milliseconds) and even if everything died meanwhile.
    @staticmethod
    def mark_started(lock_fd: int, attempt: int, pid: int, pid_started: int | None) -> None:
        line = f"{attempt} {pid} {pid_started or 0}".encode().ljust(MARKER_BYTES - 1) + b"\n"
        os.pwrite(lock_fd, line, 0)

    @staticmethod
    def clear_marker(lock_fd: int) -> None:
        os.ftruncate(lock_fd, 0)

    def started_marker(self, job_id: str) -> tuple[int, int, int | None] | None:
        """(attempt, pid, pid start time) of the last attempt started, or None."""
        try:
            data = self.statuses.read(f"{job_id}.lock", self.owners, MARKER_BYTES)
        except (OSError, UnsafeFile):
            return None
        fields = data.split()
        if len(fields) != 3 or not all(f.isdigit() for f in fields):
            return None
        attempt, pid, started = (int(f) for f in fields)
        return attempt, pid, started or None

    # ------------------------------------------------------------ removing a job
    def remove_job(self, job_id: str, still: object) -> bool:
        """Delete a job's status, log and lock files if ``still(status)`` holds under its
        lock; False when it no longer does (or the job is held or gone)."""
        assert callable(still)
        try:
            with self.status_lock(job_id, timeout=0):
                if not still(self.read_status(job_id)):
                    return False
                self.log_folder.unlink(f"{job_id}.log")
                for name in (f"{job_id}.json", f"{job_id}.inline", f"{job_id}.lock"):
                    self.statuses.unlink(name)
        except (JobBusy, JobNotFound, CorruptStatus):
            return False
        return True

    # ------------------------------------------------------------ the one-manager guard
    def lock_manager(self) -> int:
        """Hold the spool for this process; raises ManagerRunning naming the holder.

        The guard is a lock on the spool folder itself, which cannot be deleted away
        (a lock file can: an operator "cleaning a stale lock" once let a second manager
        run jobs twice)."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        deadline = time.monotonic() + GUARD_PATIENCE
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise ManagerRunning(str(self.root), self.manager_pid()) from None
                time.sleep(LOCK_POLL)
        self.top.unlink("manager.lock")  # the guard of older versions: a plain file
        return fd

    def mark_serving(self) -> None:
        self.top.write_atomic("manager.pid", str(os.getpid()).encode(), 0o644)

    def clear_serving(self) -> None:
        self.top.unlink("manager.pid")

    def manager_pid(self) -> int | None:
        try:
            return int(self.top.read("manager.pid", self.owners, 32))
        except (OSError, ValueError):
            return None

    def manager_running(self) -> bool:
        """True while some process holds the spool (a stale pid file says nothing)."""
        try:
            st = os.stat(self.root)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return is_held(st, lambda: os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
