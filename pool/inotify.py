"""inotify(7) through libc, with no thread and nothing to install: a descriptor to block
on (poll, select) for changes in folders. Used where watchdog's threads cannot be: an
inline manager, which forks its worker (pool/watch.py), and the client's one watcher
(pool/awaiting.py)."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000


def open_watches(watches: Sequence[tuple[str | os.PathLike[str], int]]) -> tuple[int, list[int]] | None:
    """A non-blocking inotify descriptor watching each folder for the events of its mask,
    and each one's watch descriptor (-1: that folder could not be watched; the caller
    decides whether it may do without). None where inotify cannot be had (another
    system, its limits reached)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
    except (OSError, AttributeError):
        return None
    if fd < 0:
        return None
    return fd, [int(libc.inotify_add_watch(fd, os.fsencode(path), mask)) for path, mask in watches]
