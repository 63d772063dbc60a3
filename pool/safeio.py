"""Every file in the spool is hostile input: how pool opens, reads and writes them.

A spool folder is opened once (``Folder``) and every file in it is opened relative to
that descriptor, so swapping a folder for a symlink later changes nothing. A file is
opened without following a symlink and without blocking on a FIFO, and checked through
its descriptor (a regular file, one link, an allowed owner, not too big) before a byte
is read, as Postfix's ``safe_open`` does. A write goes to a fresh temp file created with
``O_EXCL`` (never a name planted in advance, never through a link), then is renamed
into place, so no reader ever sees half a document.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import grp
import itertools
import os
import pwd
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import PoolError

MAX_READ = 128 * 1024 * 1024  # a status or request bigger than this is not one pool wrote
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafeFile(PoolError, ValueError):
    """A file that is not what pool may read: a link, a FIFO, another user's, too big."""


class NotAllowed(PoolError, PermissionError):
    """A folder of the spool this user may not write in: says whose it is and what to do."""


def not_allowed(folder: str, doing: str = "write in") -> NotAllowed:
    """The error for ``doing`` refused in ``folder``: which folder, whose, and what to do
    (never the name of a temp file nobody asked about)."""
    try:
        st = os.stat(folder)
    except OSError:
        return NotAllowed(f"you may not {doing} {folder}")
    owner, group = _name_of(pwd.getpwuid, st.st_uid), _name_of(grp.getgrgid, st.st_gid)
    what = (f"ask {owner} to add you to group {group}, which shares this spool" if st.st_mode & 0o070
            else f"it is {owner}'s alone")
    return NotAllowed(f"you may not {doing} {folder} (owned by {owner}, group {group}, mode "
                      f"{stat.S_IMODE(st.st_mode):o}): {what}; or use a spool of your own (--spool DIR)")


def _name_of(lookup: Any, number: int) -> str:
    try:
        return str(lookup(number)[0])
    except KeyError:
        return str(number)


class HeldFile(PoolError, BlockingIOError):
    """A file another process holds a lease on (fcntl F_SETLEASE): it cannot be opened
    now without waiting for its holder. That file's trouble, never the spool's: look at
    it again later, and at the others now."""


@dataclass(frozen=True, slots=True)
class Owners:
    """Who may own a file pool reads: the spool's owner, and (shared spools) one group."""

    uid: int
    gid: int | None = None

    def allow(self, st: os.stat_result) -> bool:
        return st.st_uid == self.uid or (self.gid is not None and st.st_gid == self.gid)


def problem_with(st: os.stat_result, owners: Owners, max_bytes: int) -> str | None:
    """Why the file behind ``st`` must not be read, or None."""
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a file"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a FIFO, socket or device)"
    if st.st_nlink > 1:
        return "has more than one hard link; copy the file instead of linking it"
    if not owners.allow(st):
        return f"is owned by uid {st.st_uid}, not by the spool's owner (uid {owners.uid}) or its group"
    if st.st_size > max_bytes:
        return f"is {st.st_size} bytes, over the limit of {max_bytes} bytes"
    return None


class _TempNames:
    """``.<name>.<pid>.<n>.tmp``: the pid says whose it is (a dead writer's temp files are
    removed at start), ``n`` counts from a random start (created with O_EXCL, a name taken
    by anyone else is skipped, never written through). Both kept here, not asked of the
    kernel for every write; a forked child starts afresh."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.pid = os.getpid()
        self.counter = itertools.count(int.from_bytes(os.urandom(4), "little"))  # as new_job_id, with no secrets

    def next(self, name: str) -> str:
        return f".{name}.{self.pid}.{next(self.counter) & 0xFFFFFFFF:08x}.tmp"


temp_name = _TempNames().next


def temp_owner_pid(temp: str) -> int | None:
    """The pid a temp name was made by, or None when it is not one of ours."""
    parts = temp.split(".")
    if len(parts) < 5 or parts[0] != "" or parts[-1] != "tmp" or not parts[-3].isdigit():
        return None
    return int(parts[-3])


class Folder:
    """One folder of the spool, opened once; files in it are handled by name."""

    def __init__(self, path: str | os.PathLike[str], durable: bool = False) -> None:
        self.path = os.fspath(path)
        self._fd: int | None = None
        # pool serve --durable: a file's data is on disk before its name is (fdatasync
        # before the rename), and names are, once the owner of a step calls sync().
        self.durable = durable
        self.renamed = False  # a name made since the last sync()

    @property
    def fd(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except PermissionError:
                # A folder we may pass through but not list (a shared spool's top, for a
                # member): files in it are still opened relative to it.
                self._fd = os.open(self.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return self._fd

    def use(self, fd: int) -> None:
        """Work through ``fd`` (a folder already opened and checked) from now on."""
        self.close()
        self._fd = fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        # A spool opened and let go, over and over (a program asking pool.Spool(path) of
        # its jobs in a loop), leaves no descriptor open behind it.
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(Exception):  # at the interpreter's exit, os may be gone
                os.close(fd)

    def join(self, name: str) -> str:
        return os.path.join(self.path, name)

    def listdir(self) -> list[str]:
        try:
            return os.listdir(self.fd)
        except FileNotFoundError:
            return []

    def has(self, name: str) -> bool:
        """Whether the folder has an entry ``name`` (whatever it is: a link is not followed)."""
        try:
            os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    # ------------------------------------------------------------ reading
    def open_checked(self, name: str, owners: Owners, max_bytes: int = MAX_READ) -> tuple[int, os.stat_result]:
        """Open ``name`` for reading the safe way; returns (fd, its stat). Raises
        FileNotFoundError, or UnsafeFile saying what is wrong with it."""
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeFile("is a symbolic link; links are never followed") from None
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise HeldFile(exc.errno, "another process holds a lease on it", self.join(name)) from None
            if exc.errno == errno.ENOENT:
                raise FileNotFoundError(errno.ENOENT, "no such file", self.join(name)) from None
            if exc.errno in (errno.ENXIO, errno.EISDIR, errno.EACCES, errno.EPERM, errno.ENODEV):
                raise UnsafeFile(f"cannot be opened: {exc.strerror}") from None
            raise
        try:
            st = os.fstat(fd)
            problem = problem_with(st, owners, max_bytes)
        except BaseException:
            os.close(fd)
            raise
        if problem is not None:
            os.close(fd)
            raise UnsafeFile(problem)
        return fd, st

    def read(self, name: str, owners: Owners, max_bytes: int = MAX_READ) -> bytes:
        fd, st = self.open_checked(name, owners, max_bytes)
        try:
            data = os.read(fd, st.st_size + 1)  # files pool writes are replaced whole, never grown
            if len(data) <= st.st_size:
                return data
            return data + read_all(fd, max_bytes - len(data))
        finally:
            os.close(fd)

    # ------------------------------------------------------------ writing
    def write_atomic(self, name: str, data: bytes, mode: int = 0o600) -> None:
        """Write ``data`` to a fresh temp file beside ``name``, then rename it over ``name``."""
        self.rename_temp(self._write_temp(name, data, mode, self.durable), name)

    def write_group(self, files: Sequence[tuple[str, bytes, int]], named: Callable[[int], None]) -> None:
        """Write each (name, data, mode) as ``write_atomic`` does, the data of them all put
        on disk together (durable: one syncfs, where an fdatasync each cost 8 times as
        much on this project's disk), then each renamed into place, in order, ``named``
        told the index of each as it is. What raises leaves the rest unnamed."""
        flush_once = self.durable and len(files) > 1 and libc_syncfs() is not None
        temps: list[str | None] = []
        try:
            for name, data, mode in files:
                temps.append(self._write_temp(name, data, mode, self.durable and not flush_once))
            if flush_once:
                syncfs(self.fd)
            for index, (name, _, _) in enumerate(files):
                tmp, temps[index] = temps[index], None
                assert tmp is not None
                self.rename_temp(tmp, name)
                named(index)
        finally:
            for tmp in temps:
                if tmp is not None:
                    self._drop_temp(tmp)

    def _drop_temp(self, tmp: str) -> None:
        try:
            os.unlink(tmp, dir_fd=self.fd)
        except OSError:
            pass

    def open_temp(self, name: str, mode: int) -> tuple[str, int]:
        """A fresh, empty temp file beside ``name``: its name and a descriptor to write it
        (``rename_temp`` puts it in place)."""
        while True:
            tmp = temp_name(name)
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                             dir_fd=self.fd)
                break
            except FileExistsError:
                continue  # planted, or left by a dead writer with our pid: never written through
            except PermissionError:
                raise not_allowed(self.path) from None
        if mode & 0o077:
            try:
                os.fchmod(fd, mode)  # a shared spool's files are group-readable whatever the umask
            except BaseException:
                os.close(fd)
                self._drop_temp(tmp)
                raise
        return tmp, fd

    def rename_temp(self, tmp: str, name: str) -> None:
        """Put a temp file in place of ``name``; the temp file is gone either way."""
        try:
            os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            self.renamed = True
        except BaseException:
            self._drop_temp(tmp)
            raise

    def _write_temp(self, name: str, data: bytes, mode: int, sync: bool) -> str:
        """A fresh temp file beside ``name`` holding ``data`` (``sync``: on disk); its name."""
        tmp, fd = self.open_temp(name, mode)
        try:
            try:
                write_all(fd, data)
                if sync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
        except BaseException:
            self._drop_temp(tmp)
            raise
        return tmp

    def open_append(self, name: str, owners: Owners, mode: int = 0o600) -> int:
        """An append descriptor on ``name`` (created if missing), never through a link,
        never on anything but a regular file of ours. Raises UnsafeFile."""
        try:
            fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         mode, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeFile(f"{self.join(name)} is a symbolic link; links are never followed") from None
            if exc.errno in (errno.ENXIO, errno.EISDIR):
                raise UnsafeFile(f"{self.join(name)} is not a regular file") from None
            raise
        st = os.fstat(fd)
        problem = problem_with(st, Owners(owners.uid), 1 << 62)
        if problem is not None:
            os.close(fd)
            raise UnsafeFile(f"{self.join(name)} {problem}")
        if mode & 0o077 and stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
        return fd

    def sync(self, force: bool = False) -> None:
        """pool serve --durable: the names made in the folder by ``write_atomic`` (and, with
        ``force``, by anyone: another process, a plain create) are on disk when this
        returns: one fsync of the folder for all of them. Nothing to do in the default
        mode. Raises OSError."""
        if self.durable and (self.renamed or force):
            os.fsync(self.fd)
            self.renamed = False

    def unlink(self, name: str) -> bool:
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        return True


def read_all(fd: int, max_bytes: int = MAX_READ) -> bytes:
    """Everything from ``fd``, but never more than ``max_bytes`` (a file may grow while
    it is read)."""
    chunks = []
    left = max_bytes + 1
    while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
        chunks.append(chunk)
        left -= len(chunk)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise UnsafeFile(f"grew over the limit of {max_bytes} bytes while being read")
    return data


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@functools.cache
def libc_syncfs() -> Any:
    """syncfs(2) from libc, None where libc has none (not Linux's). Looked up on first use:
    ctypes is not imported by every command (benchmarks/cli_start.py)."""
    import ctypes

    return getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)


def syncfs(fd: int) -> None:
    """syncfs(2): everything written to the filesystem of ``fd`` is on disk. Raises OSError."""
    import ctypes

    if libc_syncfs()(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
