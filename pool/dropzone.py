"""The drop zone: incoming/, where anyone allowed drops job files, and rejected/.

Files are opened the safe way (relative to the folder, never following a symlink, never
blocking on a FIFO, checked to be a regular file of ours before a byte is read), taken
by a rename within incoming/ (a claim), and refused by a move to rejected/ with the
reason beside them, untouched.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import orjson

from .atomic import write_atomic
from .model import utc_now

IGNORED_SUFFIXES = (".tmp", ".part")
JOB_SUFFIXES = (".json", ".jsonl")
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
# A claim is a rename *within* incoming/: watchdog holds a rename out of a watched folder
# (an unmatched IN_MOVED_FROM) for 0.5 s together with every event behind it.
CLAIM_PREFIX = ".claimed~"


def shown(name: str) -> str:
    """A file name fit for a message: undecodable bytes (kept by os.listdir as
    surrogates) become U+FFFD, control characters are escaped."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text if text.isprintable() else repr(text)[1:-1]


def is_ignored_name(name: str) -> bool:
    """Writers may write-then-rename: these names are not jobs (yet)."""
    return name.startswith(".") or name.endswith(IGNORED_SUFFIXES)


def is_job_name(name: str) -> bool:
    return not is_ignored_name(name) and name.endswith(JOB_SUFFIXES)


@dataclass(frozen=True, slots=True)
class IncomingFile:
    """What intake read from one file in incoming/, through a handle it checked first."""

    name: str
    data: bytes | None  # None when ``problem`` says why it could not be read
    problem: str | None
    size: int
    mtime: float


class DropZone:
    def __init__(self, folder: Path, rejected: Path) -> None:
        self.folder = folder
        self.rejected = rejected

    def listing(self) -> tuple[list[str], list[str]]:
        """One look at the folder: (the names that may be jobs, the claims), each sorted."""
        try:
            entries = os.listdir(self.folder)
        except FileNotFoundError:
            return [], []
        names = sorted(n for n in entries if not is_ignored_name(n))
        claims = sorted(n[len(CLAIM_PREFIX):] for n in entries if n.startswith(CLAIM_PREFIX))
        return names, claims

    def names(self) -> list[str]:
        return self.listing()[0]

    def read(self, name: str, max_bytes: int = DEFAULT_MAX_FILE_BYTES,
                      group_gid: int | None = None) -> IncomingFile:
        """Open ``incoming/name`` the safe way: relative to the folder, never following a
        symlink, never blocking on a FIFO; check it is a regular file of ours before reading."""
        dir_fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    return IncomingFile(name, None, "is a symbolic link; links are never followed", 0, 0.0)
                if exc.errno == errno.ENOENT:
                    raise FileNotFoundError(name) from None
                return IncomingFile(name, None, f"cannot be opened: {exc.strerror}", 0, 0.0)
            try:
                st = os.fstat(fd)
                problem = self._untrusted(st, max_bytes, group_gid)
                if problem:
                    return IncomingFile(name, None, problem, st.st_size, st.st_mtime)
                chunks = []
                while chunk := os.read(fd, 1 << 20):
                    chunks.append(chunk)
                return IncomingFile(name, b"".join(chunks), None, st.st_size, st.st_mtime)
            finally:
                os.close(fd)
        finally:
            os.close(dir_fd)

    @staticmethod
    def _untrusted(st: os.stat_result, max_bytes: int, group_gid: int | None) -> str | None:
        if stat.S_ISDIR(st.st_mode):
            return "is a directory, not a file"
        if not stat.S_ISREG(st.st_mode):
            return "is not a regular file (a FIFO, socket or device)"
        if st.st_nlink > 1:
            return "has more than one hard link; copy the file instead of linking it"
        if st.st_uid != os.geteuid() and (group_gid is None or st.st_gid != group_gid):
            return f"is owned by uid {st.st_uid}, not by the spool's owner (uid {os.geteuid()}) or its group"
        if st.st_size > max_bytes:
            return f"is {st.st_size} bytes, over the limit of {max_bytes} bytes"
        return None

    def claim(self, name: str, token: str) -> str:
        """Take ``incoming/name`` by renaming it to a claim; returns the claim's name
        ``<token>~<name>``."""
        claimed = f"{token}~{name}"
        os.rename(self.folder / name, self.folder / (CLAIM_PREFIX + claimed))
        return claimed

    def claimed_names(self) -> list[str]:
        return self.listing()[1]

    def claimed_path(self, claimed: str) -> Path:
        return self.folder / (CLAIM_PREFIX + claimed)

    def read_claimed(self, claimed: str) -> bytes:
        return self.claimed_path(claimed).read_bytes()

    def release_claim(self, claimed: str) -> None:
        os.unlink(self.claimed_path(claimed))

    def reject(self, name: str, reason: str, from_claimed: bool = False) -> None:
        """Move a refused file (or link, FIFO, folder: never what it points to) into
        rejected/, untouched, and write why beside it."""
        source = self.claimed_path(name) if from_claimed else self.folder / name
        original = name.split("~", 1)[1] if from_claimed else name
        target = self.rejected / original
        n = 1
        while target.exists() or target.is_symlink():
            target = self.rejected / f"{original}.{n}"
            n += 1
        os.rename(source, target)
        write_atomic(target.with_name(target.name + ".error.json"), orjson.dumps(
            {"file": shown(original), "rejected_at": utc_now(), "reason": reason}))

    def rejection_reason(self, name: str) -> str | None:
        try:
            return str(orjson.loads((self.rejected / f"{name}.error.json").read_bytes())["reason"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
