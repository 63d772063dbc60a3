"""Checkpoints: what a long job saved of its own state, for its next attempt.

    checkpoints/<id>/state   the job's last saved state: a task's ``pool.checkpoint(value)``
                             as JSON, or whatever a command wrote to $POOL_CHECKPOINT
                             (a temp file beside it, renamed over it)

Every attempt of the job sees it (a retry, a re-run after its worker or its manager died,
an attempt put back by a manager's stop, `pool retry`); `pool retry --fresh` removes it,
and so does the job's success (a done job run again starts afresh) and its removal.

Who reads what: the state is the job's own data, for the user the job runs as and
nobody else. Its folder is 0700 and that user's (a shared spool's member whose job runs
as her owns her job's folder: the worker makes it for her, and she passes through
checkpoints/, 2710, to reach it); a task's file is 0600 (a command's is as its umask
makes it, inside that folder). `pool status ID` shows when it was written and its size
to whoever may look into the folder (the job's user, root), never what it holds; pool
itself never parses a command's file.

A folder is an inode, and inodes are the dearest file work here (benchmarks/README.md):
a task's folder is made on its first save, so a job that never checkpoints costs none;
a command's is made when its attempt starts (it cannot make it itself as a member) and
removed again when it ends empty.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import PoolError
from .safeio import Folder, temp_owner_pid

CHECKPOINTS = "checkpoints"  # the folder in the spool
STATE = "state"  # the file in a job's folder
FOLDER_MODE = 0o700
FILE_MODE = 0o600
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class CheckpointError(PoolError, ValueError):
    """A checkpoint that cannot be saved (too big, not JSON) or read back (not one pool
    saved): raised in the job, which fails with it unless it catches it."""


@dataclass(frozen=True, slots=True)
class Saved:
    """What `pool status ID` shows of a job's checkpoint: when it was written, its size."""

    at: float  # seconds since the epoch
    bytes: int


class CheckpointBook:
    """The spool's checkpoints/ folder, as the manager, a worker and a client see it."""

    def __init__(self, folder: Folder) -> None:
        self.folder = folder

    def make(self, job_id: str, uid: int | None = None) -> None:
        """Make the job's folder before its attempt (a command's, or any job run as a
        member, who cannot make one in checkpoints/): ``uid``'s when given. Raises OSError."""
        try:
            os.mkdir(job_id, FOLDER_MODE, dir_fd=self.folder.fd)
        except FileExistsError:
            pass
        fd = open_own_folder(self.folder.fd, job_id, None)
        try:
            if uid is not None and os.fstat(fd).st_uid != uid:
                os.fchown(fd, uid, -1)
        finally:
            os.close(fd)

    def saved(self, job_id: str) -> Saved | None:
        """When the job's checkpoint was written and its size; None when it has none (or
        what is there is not a file: never followed)."""
        try:
            st = os.stat(f"{job_id}/{STATE}", dir_fd=self.folder.fd, follow_symlinks=False)
        except OSError:
            return None
        return Saved(st.st_mtime, st.st_size) if stat.S_ISREG(st.st_mode) else None

    def remove(self, job_id: str) -> None:
        """Remove the job's checkpoint and its folder, whatever its job put in it (never
        following a link out of it). Raises OSError (PermissionError: not ours to remove)."""
        remove_tree(self.folder.fd, job_id)

    def drop_if_empty(self, job_id: str) -> None:
        """Remove the job's folder if nothing was saved in it (a command's, made for it)."""
        with contextlib.suppress(OSError):
            os.rmdir(job_id, dir_fd=self.folder.fd)


MAX_DEPTH = 32  # folders a job nests in its checkpoint folder that are removed with it


def remove_tree(parent_fd: int, name: str, depth: int = 0) -> None:
    """Remove ``name`` from the folder ``parent_fd``, and all it holds, through folder
    descriptors only, so a link inside is removed, never followed (shutil.rmtree's own
    way, ``dir_fd``, is Python 3.11's). Raises OSError; past MAX_DEPTH nested folders,
    ELOOP: a job that nests deeper keeps its folder."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        os.unlink(name, dir_fd=parent_fd)  # a file, a link, a FIFO: not a folder
        return
    try:
        if depth >= MAX_DEPTH:
            raise OSError(errno.ELOOP, f"more than {MAX_DEPTH} nested folders", name)
        with os.scandir(fd) as entries:
            names = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
        for entry_name, is_folder in names:
            if is_folder:
                remove_tree(fd, entry_name, depth + 1)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry_name, dir_fd=fd)
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(name, dir_fd=parent_fd)


def open_own_folder(parent_fd: int, name: str, owner: int | None) -> int:
    """The job's folder, opened without following a link; with ``owner``, it must be
    that user's (a folder someone else made there is never written into)."""
    fd = os.open(name, _FOLDER_FLAGS, dir_fd=parent_fd)
    if owner is not None and os.fstat(fd).st_uid != owner:
        os.close(fd)
        raise PermissionError(errno.EPERM, f"checkpoints/{name} is not owned by uid {owner}")
    return fd


class JobCheckpoint:
    """One attempt's view of its job's checkpoint, in the process that runs its code."""

    def __init__(self, checkpoints: str, job_id: str, max_bytes: int, durable: bool = False) -> None:
        self.checkpoints = checkpoints
        self.job_id = job_id
        self.max_bytes = max_bytes
        self.durable = durable  # pool serve --durable: on disk when save() returns
        self.folder: Folder | None = None  # opened on the first save or load

    def _folder(self, make: bool) -> Folder | None:
        if self.folder is not None:
            return self.folder
        # O_PATH: a member whose job runs as her may pass through checkpoints/, not list it
        parent = os.open(self.checkpoints, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if make:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(self.job_id, FOLDER_MODE, dir_fd=parent)
            try:
                fd = open_own_folder(parent, self.job_id, os.geteuid())
            except FileNotFoundError:
                return None
        finally:
            os.close(parent)
        folder = Folder(os.path.join(self.checkpoints, self.job_id), self.durable)
        folder.use(fd)
        self._sweep(folder)
        self.folder = folder
        return folder

    @staticmethod
    def _sweep(folder: Folder) -> None:
        """Remove the temp files of saves their process never finished (it was killed)."""
        for name in folder.listdir():
            pid = temp_owner_pid(name)
            if pid is not None and pid != os.getpid():
                folder.unlink(name)

    def save(self, state: Any) -> None:
        try:
            data = orjson.dumps(state)
        except TypeError as exc:
            raise CheckpointError(f"cannot save the checkpoint: {exc}") from None
        if len(data) > self.max_bytes:
            raise CheckpointError(f"the checkpoint is {len(data)} bytes, over the limit of {self.max_bytes} bytes "
                                  "(pool serve --max-checkpoint-bytes)")
        try:
            folder = self._folder(make=True)
            assert folder is not None
            folder.write_atomic(STATE, data, FILE_MODE)
            folder.sync()
        except OSError as exc:
            raise CheckpointError(f"cannot save the checkpoint in {self.checkpoints}/{self.job_id}: "
                                  f"{exc.strerror or exc}") from None

    def load(self) -> Any:
        where = f"{self.checkpoints}/{self.job_id}/{STATE}"
        try:
            folder = self._folder(make=False)
            if folder is None:
                return None
            fd = os.open(STATE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CheckpointError(f"cannot read the checkpoint {where}: "
                                  f"{'a link' if exc.errno == errno.ELOOP else exc.strerror or exc}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                raise CheckpointError(f"the checkpoint {where} is not a file this job saved")
            if st.st_size > self.max_bytes:
                raise CheckpointError(f"the checkpoint {where} is {st.st_size} bytes, over the limit of "
                                      f"{self.max_bytes} bytes (pool serve --max-checkpoint-bytes)")
            data = read_up_to(fd, self.max_bytes)
        finally:
            os.close(fd)
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise CheckpointError(f"the checkpoint {where} is not JSON ({exc}); `pool retry --fresh` "
                                  "starts the job afresh") from None

    def close(self) -> None:
        if self.folder is not None:
            self.folder.close()


def read_up_to(fd: int, limit: int) -> bytes:
    chunks, size = [], 0
    while size <= limit:
        chunk = os.read(fd, min(1 << 20, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise CheckpointError(f"the checkpoint grew past the limit of {limit} bytes while it was read")
    return b"".join(chunks)


_current: JobCheckpoint | None = None


@contextlib.contextmanager
def attempt_checkpoint(checkpoints: str, job_id: str, max_bytes: int, durable: bool = False) -> \
        Iterator[JobCheckpoint]:
    """Make ``pool.checkpoint``/``pool.resume`` act on this job's checkpoint while its
    attempt runs in this process."""
    global _current
    current = JobCheckpoint(checkpoints, job_id, max_bytes, durable)
    _current = current
    try:
        yield current
    finally:
        _current = None
        current.close()


def checkpoint(state: Any) -> None:
    """Save ``state`` (a JSON value: dicts, lists, strings, numbers) as the running job's
    checkpoint, replacing the last one whole: a crash in the middle leaves the last one.
    Its next attempt gets it back from ``pool.resume()``. Outside a job it does nothing.
    Raises CheckpointError (not JSON, or over `pool serve --max-checkpoint-bytes`)."""
    current = _current
    if current is not None:
        current.save(state)


def resume() -> Any:
    """The running job's last checkpoint, or None (its first attempt, or after
    `pool retry --fresh`; always None outside a job). Raises CheckpointError when what is
    there is not a checkpoint pool saved."""
    current = _current
    return current.load() if current is not None else None

