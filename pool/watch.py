"""File events only wake the manager: a bare inotify descriptor of its own on incoming/
(and on requests/ for an inline manager, which must have no thread: it forks its worker),
watchdog's threads for the folders of few changes (requests/, schedules/, groups/), and
for incoming/ too where the descriptor cannot be had.

Events name the files to look at; the directory is the truth: the manager lists
``incoming/`` whole at its start, every rescan tick and after the kernel dropped events
(pool/intake.py). What an event adds is *how* a file changed, so the manager can tell a
file still being written (created or modified, not yet closed) from one that is complete
(closed after writing, or renamed into place).
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections import deque
from collections.abc import Callable

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from .dropzone import is_ignored_name
from .inotify import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_MODIFY,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    open_watches,
)

WRITING = "writing"
COMPLETE = "complete"
GONE = "gone"
CHANGED = "changed"  # attributes: says nothing about whether it is complete
IDLE_TIMEOUT = 10.0  # seconds


class WakeHandler(FileSystemEventHandler):
    """Runs in watchdog's thread: record (name, what happened) and wake the manager. A
    change in one of the ``flagged`` folders (requests/, schedules/) only raises its flag:
    the manager reads that folder whole."""

    def __init__(self, incoming: str, flagged: list[str], notes: deque[tuple[str, str]],
                 wake: Callable[[], None]) -> None:
        self.incoming = incoming
        self.flags = dict.fromkeys(flagged, True)  # True at first: read once at start
        self.notes = notes
        self.wake = wake

    def take_changed(self, folder: str) -> bool:
        changed, self.flags[folder] = self.flags[folder], False
        return changed

    def heard(self, folder: str, events: list[tuple[str, int]]) -> bool:
        """Files of ``folder`` heard of by the manager's own inotify descriptor (name,
        mask): noted as watchdog's events are."""
        return any([self._note(os.path.join(folder, name), what_of(mask)) for name, mask in events])

    def _note(self, path: str | bytes, what: str) -> bool:
        """Record what happened to one path; True when the manager has something to do."""
        path = os.fsdecode(path)
        folder, name = os.path.split(path)
        if folder == self.incoming:
            if is_ignored_name(name):
                return False  # a writer's temp file, or our own claim: not a job (yet)
            self.notes.append((name, what))
            return what != GONE
        if folder in self.flags and not name.startswith("."):  # not a temp file of ours
            self.flags[folder] = True
            return True
        return False  # the watched folders themselves

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, (FileCreatedEvent, FileModifiedEvent)):
            wake = self._note(event.src_path, WRITING)
        elif isinstance(event, FileClosedEvent):
            wake = self._note(event.src_path, COMPLETE)
        elif isinstance(event, FileMovedEvent):
            self._note(event.src_path, GONE)
            wake = self._note(event.dest_path, COMPLETE)
        elif event.event_type in ("opened", "closed_no_write"):
            return  # reads, ours or anyone's: nothing changed
        else:
            wake = self._note(event.src_path, GONE if event.event_type == "deleted" else CHANGED)
        if wake:
            self.wake()


def _not_shutdown_noise(record: logging.LogRecord) -> bool:
    # watchdog 6/7 logs this at ERROR when its reader thread wakes after stop() on an
    # orderly shutdown (InotifyEmitter.queue_events racing on_thread_stop): nothing is lost.
    return "called when the thread is inactive" not in record.getMessage()


def start_observer(paths: list[str], handler: WakeHandler) -> BaseObserver:
    logging.getLogger("watchdog.observers.inotify").addFilter(_not_shutdown_noise)
    # A long timeout: the observer threads wake for it even when nothing happens, and an
    # idle manager should cost (close to) nothing. stop() does not wait for it.
    observer = Observer(timeout=IDLE_TIMEOUT)
    for path in paths:
        # Only what intake needs reaches us: no opens, no closes of readers (our own
        # rescans would otherwise wake these threads), no directory events.
        observer.schedule(handler, path, recursive=False, event_filter=[
            FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent, FileDeletedEvent])
    observer.daemon = True
    observer.start()
    return observer


NEW_FILES = IN_CLOSE_WRITE | IN_MOVED_TO
# What the intake needs to hear of incoming/: a file made (IN_CREATE: a link, a FIFO, a
# file being written), written to, complete, or gone. Watchdog's thread heard the same,
# and spent most of a busy manager's CPU pairing each rename's two events (a writer's temp
# renamed in, our claim renamed aside) in a queue it searches whole for each.
INCOMING_EVENTS = NEW_FILES | IN_CREATE | IN_MODIFY | IN_MOVED_FROM | IN_DELETE


def what_of(mask: int) -> str:
    """What an inotify event says of its file, as the intake notes it."""
    if mask & (IN_CLOSE_WRITE | IN_MOVED_TO):
        return COMPLETE
    if mask & (IN_MOVED_FROM | IN_DELETE):
        return GONE
    return WRITING  # made, or written to


class FolderWatch:
    """A folder's files as a descriptor to block on, with no thread: inotify(7), on the
    events of ``mask`` (by default: files closed after writing or renamed into the
    folder). ``open`` gives None where inotify cannot be had (another system, its limits
    reached): the rescan tick is then all there is."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.overflowed = False  # the kernel dropped events (its queue was full): list the folder

    @classmethod
    def open(cls, path: str, mask: int = NEW_FILES) -> FolderWatch | None:
        opened = open_watches([(path, mask)])
        if opened is None:
            return None
        fd, [wd] = opened
        if wd < 0:
            os.close(fd)
            return None
        return cls(fd)

    def fileno(self) -> int:
        return self.fd

    def names(self) -> list[str]:
        """Read every event waiting; the names they are about."""
        return [name for name, _ in self.events()]

    def events(self) -> list[tuple[str, int]]:
        """Read every event waiting: (name, mask) of each, in the order they came (struct
        inotify_event: wd, mask, cookie, len, then a name padded with NULs to len)."""
        found: list[tuple[str, int]] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    return found
                raise
            if not data:
                return found
            at = 0
            while at + 16 <= len(data):
                mask = int.from_bytes(data[at + 4:at + 8], sys.byteorder)
                if mask & IN_Q_OVERFLOW:
                    self.overflowed = True
                length = int.from_bytes(data[at + 12:at + 16], sys.byteorder)
                name = data[at + 16:at + 16 + length].rstrip(b"\0")
                if name:
                    found.append((os.fsdecode(name), mask))
                at += 16 + length

    def close(self) -> None:
        os.close(self.fd)
