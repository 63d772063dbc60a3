"""The spool directory: the on-disk layout, job statuses, their locks, events, requests,
and the manager's lock. (The drop zone's files, incoming/ and rejected/, are handled by
pool/dropzone.py, and written with pool/atomic.py, as everything here is.)

    spool/
      incoming/          drop zone (*.json, *.jsonl); dot-files, *.tmp and *.part are ignored
        .claimed~<token>~<name>   a file taken by rename, until its jobs have statuses
      status/<id>.json   the live status of one job, replaced atomically; <id>.lock beside it
                         (the job's lock), <id>.inline (held by an inline run's supervisor)
      logs/<id>.log      what the job printed
      rejected/<file>    a refused input, untouched, with <file>.error.json saying why
      requests/          kill and retry requests for the manager (<kind>-<id>)
      events.jsonl       one line per state change
      manager.lock       flock-held by the running manager, holding its pid; manager.pid
                         is written once it serves (watching incoming/, workers started)

Every document is written to a temp file in the same folder and then ``os.replace``d, so
a reader never needs a lock and never sees a partial document. Writers of a status take
its lock (flock on status/<id>.lock, see ``lease``) so two of them never interleave a
read-modify-write; a job's worker holds it for the job's whole run.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson

from .atomic import write_atomic
from .dropzone import DropZone
from .errors import JobBusy, JobNotFound, ManagerRunning, SpoolError
from .model import JobStatus, State, utc_now

log = logging.getLogger(__name__)

DIRS = ("incoming", "status", "logs", "rejected", "requests")
LOCK_TIMEOUT = 2.0  # other writers hold a status lock for a read and a write: never long
LOCK_POLL = 0.005


def _created_at(doc: bytes) -> bytes:
    at = doc.find(b'"created_at":"')
    return doc[at + 14:at + 41] if at >= 0 else b""


class SpoolDir:
    """Paths and file operations of one spool directory."""

    def __init__(self, root: str | os.PathLike[str], buffer_events: bool = False) -> None:
        self.root = Path(root).absolute()
        self.buffer_events = buffer_events  # the manager appends a loop turn's events at once
        self._event_lines: list[bytes] = []
        self.incoming = self.root / "incoming"
        self.status_dir = self.root / "status"
        self._status_dir = str(self.status_dir)  # plain strings on the per-job paths: pathlib costs µs
        self.logs = self.root / "logs"
        self.rejected = self.root / "rejected"
        self.requests = self.root / "requests"
        self.events = self.root / "events.jsonl"
        self.drop = DropZone(self.incoming, self.rejected)
        self.lock_path = self.root / "manager.lock"
        self.pid_path = self.root / "manager.pid"
        self._events_fd: int | None = None

    # ------------------------------------------------------------ layout
    def create(self, group_gid: int | None = None) -> None:
        """Create whatever is missing. The spool is private to its owner (0700), or shared
        with one group (2770: new files inherit the group)."""
        mode = 0o700 if group_gid is None else 0o2770
        try:
            for path in (self.root, *(self.root / name for name in DIRS)):
                if not path.is_dir():
                    path.mkdir(mode=0o700, parents=True, exist_ok=True)
                    if group_gid is not None:
                        os.chown(path, -1, group_gid)
                    os.chmod(path, mode)
        except OSError as exc:
            raise SpoolError(f"cannot create spool {self.root}: {exc.strerror}") from None

    def check_safe(self, group_gid: int | None = None) -> None:
        """Whoever can write into incoming/ can run code as us: refuse a spool that lets
        other users (or, unless it is the --group, another group) write there."""
        for path in (self.root, self.incoming):
            st = path.stat()
            if st.st_mode & stat.S_IWOTH:
                raise SpoolError(f"{path} is writable by every user (mode {stat.S_IMODE(st.st_mode):o}), so anyone "
                                 f"could run code as this user; run: chmod o-w {path}")
            if st.st_mode & stat.S_IWGRP and st.st_gid != group_gid:
                raise SpoolError(f"{path} is writable by its group (gid {st.st_gid}); run chmod g-w {path}, "
                                 "or serve with --group naming that group")

    def exists(self) -> bool:
        return self.status_dir.is_dir()

    def status_path(self, job_id: str) -> Path:
        return self.status_dir / f"{job_id}.json"

    def log_path(self, job_id: str) -> Path:
        return self.logs / f"{job_id}.log"

    # ------------------------------------------------------------ status documents
    def lease(self, job_id: str) -> int | None:
        """Take the job's lock without waiting; returns its descriptor (closing it lets
        go), or None when another process holds it.

        A job's worker holds this lock from start to outcome, so the lock doubles as
        proof that the job is alive, which survives the death of the manager that
        started it; every other writer of the job's status takes it briefly
        (``status_lock``). It is flock(2) on ``status/<id>.lock``, a file left in
        place, taken directly: the filelock package (4.3) spends ~100 µs and ~470
        Python calls per acquire and release where flock takes 2 µs, and its lock
        files may be replaced or fall back to marker files, which a lock held by one
        process for a job's whole run cannot afford."""
        return self._try_flock(f"{job_id}.lock")

    def _try_flock(self, name: str) -> int | None:
        fd = os.open(os.path.join(self._status_dir, name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def _is_held(self, name: str) -> bool:
        fd = self._try_flock(name)
        if fd is None:
            return True
        os.close(fd)
        return False

    @contextlib.contextmanager
    def status_lock(self, job_id: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
        """Hold the job's lock for a read-modify-write; raises JobBusy after ``timeout``
        seconds (the job's worker holds it while the job runs)."""
        deadline = time.monotonic() + timeout
        while (fd := self.lease(job_id)) is None:
            if time.monotonic() >= deadline:
                raise JobBusy(f"job {job_id!r} is held by the process running it")
            time.sleep(LOCK_POLL)
        try:
            yield
        finally:
            os.close(fd)

    def supervise(self, job_id: str) -> int | None:
        """The inline supervisor's hold on a job (see pool.inline): like ``lease``, on
        ``status/<id>.inline``, for as long as it looks after the job."""
        return self._try_flock(f"{job_id}.inline")

    def is_supervised(self, job_id: str) -> bool:
        """True while an inline supervisor looks after the job."""
        name = f"{job_id}.inline"
        return os.path.exists(os.path.join(self._status_dir, name)) and self._is_held(name)

    def is_leased(self, job_id: str) -> bool:
        """True while some process runs the job (holds its lock)."""
        return self._is_held(f"{job_id}.lock")

    def write_status(self, status: JobStatus) -> None:
        """Replace a status document whole; callers that may race hold its lock."""
        write_atomic(os.path.join(self._status_dir, f"{status.id}.json"), status.encode())

    def read_status(self, job_id: str) -> JobStatus:
        """Raises JobNotFound when the job has no status document."""
        try:
            with open(os.path.join(self._status_dir, f"{job_id}.json"), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise JobNotFound(f"no job {job_id!r} in {self.root}") from None
        return JobStatus.decode(data)

    def has_status(self, job_id: str) -> bool:
        return self.status_path(job_id).exists()

    def update_status(
        self, job_id: str, change: Callable[[JobStatus], JobStatus | None]
    ) -> tuple[JobStatus, JobStatus | None]:
        """Read, change and write one status under its lock; ``change`` returns None to
        leave it as it is. Returns (the status before, the status written or None).
        Raises JobNotFound, or JobBusy when a live worker holds the job."""
        with self.status_lock(job_id):
            before = self.read_status(job_id)
            after = change(before)
            if after is not None:
                self.write_status(after)
            return before, after

    def remove_job(self, job_id: str, still: Callable[[JobStatus], bool]) -> bool:
        """Delete a job's status, log and lock files if ``still(status)`` holds under its
        lock; False when it no longer does (or the job is held or gone)."""
        try:
            with self.status_lock(job_id, timeout=0):
                if not still(self.read_status(job_id)):
                    return False
                for path in (self.log_path(job_id), self.status_path(job_id), self.status_dir / f"{job_id}.inline"):
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
                os.unlink(self.status_dir / f"{job_id}.lock")
        except (JobBusy, JobNotFound, ValueError):
            return False
        return True

    def status_ids(self) -> list[str]:
        return [n[:-5] for n in os.listdir(self.status_dir) if n.endswith(".json") and not n.startswith(".")]

    def raw_statuses(self, state: str | None = None) -> list[bytes]:
        """Every status document as it is on disk, newest first, unparsed: the fast path
        for ``pool status --json``. Documents are written by orjson (no spaces), so a
        state is found by its bytes and the creation time by its key."""
        wanted = f'"state":"{state}"'.encode() if state else None
        docs = []
        for name in os.listdir(self._status_dir):
            if not name.endswith(".json") or name.startswith("."):
                continue
            try:
                with open(os.path.join(self._status_dir, name), "rb") as f:
                    doc = f.read()
            except FileNotFoundError:
                continue
            if wanted is None or wanted in doc:
                docs.append(doc)
        docs.sort(key=_created_at, reverse=True)
        return docs

    def iter_statuses(self, cache: dict[str, tuple[int, JobStatus]] | None = None) -> Iterator[JobStatus]:
        """Every readable status; one deleted or broken meanwhile is skipped. With a
        ``cache`` (kept by the caller between calls, as a live view does), a document is
        parsed again only when its file changed: every write replaces the file, so a new
        inode or mtime means new content, and a stat costs far less than a parse."""
        with os.scandir(self._status_dir) as entries:
            for entry in entries:
                name = entry.name
                if not name.endswith(".json") or name.startswith("."):
                    continue
                try:
                    if cache is not None:
                        st = entry.stat()
                        stamp = st.st_ino ^ st.st_mtime_ns
                        known = cache.get(name)
                        if known is not None and known[0] == stamp:
                            yield known[1]
                            continue
                    status = self.read_status(name[:-5])
                except (OSError, JobNotFound, ValueError, KeyError):
                    continue
                if cache is not None:
                    cache[name] = (stamp, status)
                yield status

    # ------------------------------------------------------------ events
    def append_event(self, job_id: str, before: State | None, after: State, attempt: int, reason: str) -> None:
        """One line per state change. O_APPEND and a single write keep lines whole."""
        self._event_lines.append(orjson.dumps({
            "time": utc_now(), "id": job_id, "from": before.value if before else None,
            "to": after.value, "attempt": attempt, "reason": reason,
        }) + b"\n")
        if not self.buffer_events:
            self.flush_events()

    def flush_events(self) -> None:
        if not self._event_lines:
            return
        data = b"".join(self._event_lines)
        self._event_lines.clear()
        try:
            if self._events_fd is None:
                self._events_fd = os.open(self.events, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.write(self._events_fd, data)
        except OSError as exc:
            # The status documents are the truth; the central log is a record of them,
            # and a full disk must not stop the jobs.
            log.warning("could not append %d event(s) to events.jsonl (%s)", data.count(b"\n"), exc)

    def read_events(self, job_id: str | None = None) -> list[dict[str, Any]]:
        try:
            lines = self.events.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        events = []
        for line in lines:
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if job_id is None or event.get("id") == job_id:
                events.append(event)
        return events

    # ------------------------------------------------------------ requests to the manager
    def file_request(self, kind: str, job_id: str, payload: dict[str, Any] | None = None) -> None:
        write_atomic(self.requests / f"{kind}-{job_id}", orjson.dumps(payload or {}))

    def pending_requests(self) -> list[tuple[str, str, dict[str, Any]]]:
        found = []
        for name in sorted(os.listdir(self.requests)):
            if name.startswith(".") or "-" not in name:
                continue
            kind, job_id = name.split("-", 1)
            try:
                payload = orjson.loads((self.requests / name).read_bytes())
            except (OSError, orjson.JSONDecodeError):
                payload = {}
            found.append((kind, job_id, payload))
        return found

    def request_pending(self, kind: str, job_id: str) -> bool:
        return (self.requests / f"{kind}-{job_id}").exists()

    def drop_request(self, kind: str, job_id: str) -> None:
        try:
            os.unlink(self.requests / f"{kind}-{job_id}")
        except FileNotFoundError:
            pass

    # ------------------------------------------------------------ the manager's lock
    def lock_manager(self) -> int:
        """Hold the spool for this process; raises ManagerRunning naming the holder.
        The lock file holds the holder's pid; manager.pid appears once it serves."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ManagerRunning(str(self.root), self.manager_pid()) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    def mark_serving(self) -> None:
        write_atomic(self.pid_path, str(os.getpid()).encode())

    def clear_serving(self) -> None:
        try:
            os.unlink(self.pid_path)
        except FileNotFoundError:
            pass

    def manager_pid(self) -> int | None:
        try:
            return int(self.lock_path.read_text())
        except (OSError, ValueError):
            return None

    def manager_running(self) -> bool:
        """True while some process holds the manager lock (a stale pid file says nothing)."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False
