"""The manager's reserve of disk space: what lets it record an outcome on a full disk.

A job can fill the disk with its own output; then its outcome cannot be written, and
nothing frees space by itself: the job would show `queued` until someone made room. So
the manager keeps a small file with its blocks allocated (``spool/.reserve``), lets it go
the moment an outcome cannot be written for want of space, writes what it holds, and
makes the reserve again once there is room.
"""

from __future__ import annotations

import errno
import os

from .safeio import Folder

NAME = ".reserve"
SIZE = 256 * 1024  # a few dozen outcomes and their events, on any filesystem's blocks


class Reserve:
    def __init__(self, folder: Folder) -> None:
        self.folder = folder

    def keep(self) -> bool:
        """Make sure the reserve is there; False when there is no room for it now."""
        try:
            fd = os.open(NAME, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self.folder.fd)
        except OSError:
            return False
        try:
            if os.fstat(fd).st_size >= SIZE:
                return True
            os.posix_fallocate(fd, 0, SIZE)
            return True
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # no fallocate here: write it out
                try:
                    os.pwrite(fd, b"\0" * SIZE, 0)
                    return True
                except OSError:
                    pass
            self.folder.unlink(NAME)
            return False
        finally:
            os.close(fd)

    def release(self) -> bool:
        """Give the reserve's space back; True when there was one to give."""
        return self.folder.unlink(NAME)
