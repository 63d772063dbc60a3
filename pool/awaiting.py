"""Waiting on jobs with no thread and no poll per job: one watcher per process.

    JobFuture, pool.aio --listen(spool, id, listener)--> the Watcher
    its one thread blocks in poll(2) on one inotify descriptor per spool and on the
    pidfds of private managers, with no timeout (an idle caller costs nothing):
        <id>.json renamed into status/     --> its status read, told to the id's listeners
        <id>.json moved into rejected/     --> its refusal told (JobRejected; why it was
                                           refused is written there just before)
        <id>.json gone from status/        --> told (JobNotFound: `pool remove`)
        the kernel's queue overflowed      --> every watched job read again
        a private manager's pidfd readable --> its callback (it ended)

Every status is written by a rename into status/ (pool/spool.py), and every refusal
lands in rejected/, so nothing that ends a job escapes the watch. Where inotify cannot
be had (its limits reached), the watched jobs of that spool are read every
``FALLBACK_POLL`` seconds instead. A listener is called in the watcher's thread, with
a JobStatus or the PoolError that ended its wait; it returns True when it has heard
all it waited for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CorruptStatus, JobNotFound, PoolError
from .finding import Finding
from .inotify import IN_CLOSE_WRITE, IN_DELETE, IN_IGNORED, IN_MOVED_FROM, IN_MOVED_TO, IN_Q_OVERFLOW, open_watches
from .model import JobStatus

log = logging.getLogger(__name__)

FALLBACK_POLL = 0.1  # seconds between reads of the watched jobs of a spool inotify cannot watch

EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)

Heard = JobStatus | PoolError
Listener = Callable[[Heard], bool]


@dataclass
class Watched:
    """One spool's watch: its descriptor, and who listens for which job."""

    finding: Finding
    fd: int | None  # None: inotify could not be had; read every FALLBACK_POLL seconds
    folders: dict[int, str] = field(default_factory=dict)  # watch descriptor -> "status" | "rejected"
    listeners: dict[str, list[Listener]] = field(default_factory=dict)


class Watcher:
    """One per process (``watcher()``): every future and aio job of it waits here."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spools: dict[Path, Watched] = {}
        self.exits: dict[int, Callable[[], None]] = {}  # pidfd -> what to do when that process ends
        self.to_read: dict[tuple[Path, str], None] = {}  # jobs to read at the next turn, in order
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.thread: threading.Thread | None = None

    # ------------------------------------------------------------ callers' side
    def listen(self, finding: Finding, job_id: str, listener: Listener, read_now: bool = True) -> None:
        """Tell ``listener`` of every change of the job from now on. ``read_now``: its
        status as it is now too (a job submitted after this call needs no read: the
        watch is in place before its file is written)."""
        with self.lock:
            new = finding.path not in self.spools
            watched = self._watched(finding)
            watched.listeners.setdefault(job_id, []).append(listener)
            if read_now or watched.fd is None:
                self.to_read[(finding.path, job_id)] = None
            self._start()
        if read_now or new:  # a new descriptor to poll, or a status to read now
            self.wake()

    def forget(self, finding: Finding, job_id: str, listener: Listener) -> None:
        with self.lock:
            watched = self.spools.get(finding.path)
            listeners = watched.listeners.get(job_id, []) if watched is not None else []
            with contextlib.suppress(ValueError):
                listeners.remove(listener)
            if watched is not None and not listeners:
                watched.listeners.pop(job_id, None)

    def on_exit(self, pidfd: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` (in the watcher's thread) once the process of ``pidfd`` ends."""
        with self.lock:
            self.exits[pidfd] = callback
            self._start()
        self.wake()

    def drop_exit(self, pidfd: int) -> None:
        with self.lock:
            self.exits.pop(pidfd, None)
        self.wake()

    def release(self, path: Path) -> None:
        """Stop watching a spool (one about to be removed): its listeners hear no more."""
        with self.lock:
            watched = self.spools.pop(path, None)
        if watched is not None and watched.fd is not None:
            os.close(watched.fd)
        self.wake()

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self.wake_w, b"!")

    def _watched(self, finding: Finding) -> Watched:
        watched = self.spools.get(finding.path)
        if watched is None:
            watched = self.spools[finding.path] = Watched(finding, None)
            watched.fd, watched.folders = open_watch(finding)
        return watched

    def _start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="pool-watcher", daemon=True)
            self.thread.start()

    # ------------------------------------------------------------ the thread
    def _run(self) -> None:
        poller = select.poll()
        polled: set[int] = set()
        while True:
            with self.lock:
                fds = {self.wake_r, *self.exits, *(w.fd for w in self.spools.values() if w.fd is not None)}
                fallback = any(w.fd is None and w.listeners for w in self.spools.values())
                timeout = 0 if self.to_read else FALLBACK_POLL * 1000 if fallback else None
            for fd in polled - fds:
                poller.unregister(fd)
            for fd in fds - polled:
                poller.register(fd, select.POLLIN)
            polled = fds
            try:
                ready = {fd for fd, _ in poller.poll(timeout)}
            except InterruptedError:
                continue
            try:
                self._turn(ready, fallback)
            except Exception:  # a listener's trouble is its own: the watch goes on for the others
                log.exception("pool's job watcher")

    def _turn(self, ready: set[int], fallback: bool) -> None:
        if self.wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self.wake_r, 4096):
                    pass
        with self.lock:
            for watched in list(self.spools.values()):
                if watched.fd is not None and watched.fd in ready:
                    self._note(watched)
                elif watched.fd is None and fallback:
                    self.to_read.update(dict.fromkeys((watched.finding.path, i) for i in watched.listeners))
            to_read, self.to_read = list(self.to_read), {}
            ended = [self.exits.pop(fd) for fd in ready if fd in self.exits]
        for path, job_id in to_read:
            self._tell(path, job_id)
        for callback in ended:  # after this turn's statuses: a job that ended before its manager did is done
            callback()

    def _note(self, watched: Watched) -> None:
        """Read the spool's inotify events (the lock is held): the watched jobs they name
        are to be read."""
        assert watched.fd is not None
        try:
            data = os.read(watched.fd, 65536)
        except BlockingIOError:
            return
        path = watched.finding.path
        offset = 0
        while offset + EVENT.size <= len(data):
            wd, mask, _, length = EVENT.unpack_from(data, offset)
            name = data[offset + EVENT.size:offset + EVENT.size + length].rstrip(b"\0").decode(errors="replace")
            offset += EVENT.size + length
            if mask & IN_Q_OVERFLOW:
                self.to_read.update(dict.fromkeys((path, i) for i in watched.listeners))
            elif mask & IN_IGNORED:
                watched.folders.pop(wd, None)  # the folder is gone
            elif watched.folders.get(wd) == "status" and name.endswith(".json"):
                if name[:-5] in watched.listeners:
                    self.to_read[(path, name[:-5])] = None
            elif watched.folders.get(wd) == "rejected":  # why it was refused, then the file itself
                job_id = name.split(".json", 1)[0]
                if job_id in watched.listeners:
                    self.to_read[(path, job_id)] = None

    def _tell(self, path: Path, job_id: str) -> None:
        with self.lock:
            watched = self.spools.get(path)
            listeners = list(watched.listeners.get(job_id, ())) if watched is not None else []
        if watched is None or not listeners:
            return
        heard: Heard
        try:
            heard = watched.finding.status(job_id)
        except (JobNotFound, CorruptStatus) as exc:
            heard = exc
        except OSError as exc:
            heard = PoolError(f"job {job_id!r}: its status cannot be read: {exc}")
        done = [listener for listener in listeners if listener(heard)]
        if done:
            with self.lock:
                for listener in done:
                    with contextlib.suppress(ValueError):
                        watched.listeners.get(job_id, []).remove(listener)
                if not watched.listeners.get(job_id, True):
                    del watched.listeners[job_id]


def open_watch(finding: Finding) -> tuple[int | None, dict[int, str]]:
    """An inotify descriptor on the spool's status/ and rejected/ (a spool may have no
    rejected/ yet), or (None, {}) where status/ cannot be watched."""
    opened = open_watches([(finding.dir.status_dir, IN_MOVED_TO | IN_CLOSE_WRITE | IN_DELETE | IN_MOVED_FROM),
                           (finding.dir.rejected, IN_MOVED_TO | IN_CLOSE_WRITE)])
    if opened is None:
        return None, {}
    fd, (status_wd, rejected_wd) = opened
    if status_wd < 0:
        os.close(fd)
        return None, {}
    return fd, {wd: name for wd, name in ((status_wd, "status"), (rejected_wd, "rejected")) if wd >= 0}


_watcher: Watcher | None = None
_watcher_lock = threading.Lock()


def watcher() -> Watcher:
    """This process's watcher (a child forked from it gets one of its own)."""
    global _watcher
    with _watcher_lock:
        if _watcher is None:
            _watcher = Watcher()
        return _watcher


def _forget_in_child() -> None:
    global _watcher, _watcher_lock
    _watcher, _watcher_lock = None, threading.Lock()  # its thread did not come along


os.register_at_fork(after_in_child=_forget_in_child)
