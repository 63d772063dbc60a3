"""The drop zone: incoming/, where anyone allowed drops job files, and rejected/.

A file is taken by renaming it within incoming/ (a claim) *before* it is read, so what
is read is exactly what was claimed: lines appended by a writer after the claim land in a
new file, never in one already parsed. It is read only once no writer has it open (a
read lease says so, where the kernel lets us take one), opened the safe way (no links,
no FIFOs, checked to be a regular file of an allowed owner before a byte is read), and
refused by a move to rejected/ with the reason beside it, untouched.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import signal
import stat
from pathlib import Path
from typing import Any

import orjson

from .model import utc_now
from .safeio import Folder, Owners

IGNORED_SUFFIXES = (".tmp", ".part")
JOB_SUFFIXES = (".json", ".jsonl")
# A claim is a rename *within* incoming/: watchdog holds a rename out of a watched folder
# (an unmatched IN_MOVED_FROM) for 0.5 s together with every event behind it.
CLAIM_PREFIX = ".claimed~"
CLAIM_TOKEN = re.compile(r"[0-9a-f]{12}\Z")
F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)
F_SETSIG = getattr(fcntl, "F_SETSIG", 10)


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


def claim_parts(entry: str) -> tuple[str, str] | None:
    """(token, original name) of a claim's folder entry, or None when it is not a claim
    pool made (a file someone named ``.claimed~...`` by hand gets no special trust)."""
    token, sep, name = entry[len(CLAIM_PREFIX):].partition("~")
    if not entry.startswith(CLAIM_PREFIX) or not sep or not CLAIM_TOKEN.match(token) or not is_job_name(name):
        return None
    return token, name


def writer_open(fd: int) -> bool | None:
    """Whether some process has the file open for writing: a read lease can be taken
    only when none has (fcntl(2) F_SETLEASE); it is let go at once. None when the kernel
    will not say (a file of another user, a filesystem without leases).

    A writer opening the file in the microseconds the lease is held breaks it, and the
    kernel tells the holder with a signal: SIGIO unless told otherwise, whose default
    action ends the process. It is told SIGURG instead, which is ignored by default."""
    try:
        fcntl.fcntl(fd, F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return True if exc.errno == errno.EAGAIN else None
    fcntl.fcntl(fd, F_SETLEASE, fcntl.F_UNLCK)
    return False


class DropZone:
    def __init__(self, folder: Path, rejected: Path) -> None:
        self.folder = Folder(folder)
        self.rejected = Folder(rejected)

    def listing(self) -> tuple[list[str], list[str]]:
        """One look at the folder: (the names that may be jobs, the claim entries)."""
        entries = self.folder.listdir()
        names = [n for n in entries if not is_ignored_name(n)]
        claims = sorted(n for n in entries if n.startswith(CLAIM_PREFIX))
        return names, claims

    def names(self) -> list[str]:
        return sorted(self.listing()[0])

    def claim(self, name: str, token: str) -> str:
        """Take ``incoming/name`` by renaming it to a claim; returns the claim's entry."""
        entry = f"{CLAIM_PREFIX}{token}~{name}"
        os.rename(name, entry, src_dir_fd=self.folder.fd, dst_dir_fd=self.folder.fd)
        return entry

    def open_checked(self, entry: str, owners: Owners, max_bytes: int) -> tuple[int, os.stat_result]:
        return self.folder.open_checked(entry, owners, max_bytes)

    def release_claim(self, entry: str) -> None:
        self.folder.unlink(entry)

    def reject(self, entry: str, reason: str) -> str:
        """Move a refused entry of incoming/ (a file, link, FIFO, folder: never what it
        points to) into rejected/, untouched, and write why beside it. A claim keeps its
        original name. Returns the name it has in rejected/."""
        parts = claim_parts(entry)
        original = parts[1] if parts else entry.replace(CLAIM_PREFIX, "claimed~", 1)
        return self.reject_from(self.folder, entry, original, reason)

    def reject_from(self, source: Folder, entry: str, original: str, reason: str) -> str:
        """Move ``entry`` of ``source`` into rejected/ and write why beside it, readable by
        whoever could read what was refused (in a shared spool, a member refused sees
        why): the reason says no more than the file did."""
        target = self._free_name(original)
        try:
            st = os.stat(entry, dir_fd=source.fd, follow_symlinks=False)
        except OSError:
            st = None
        readable = st.st_mode & stat.S_IRGRP if st is not None else 0
        why = f"{target}.error.json"
        # Why first, then the file: whoever finds the file gone from incoming/ finds why
        # at once (a client asking in between was told there was no such job).
        self.rejected.write_atomic(why, orjson.dumps(
            {"file": shown(original), "rejected_at": utc_now(), "reason": reason}), 0o600 | readable)
        if st is not None and not readable and st.st_uid not in (0, os.geteuid()) and os.geteuid() == 0:
            # A member's file only she could read (served by root): so is why it was refused.
            os.chown(why, st.st_uid, -1, dir_fd=self.rejected.fd, follow_symlinks=False)
        try:
            os.rename(entry, target, src_dir_fd=source.fd, dst_dir_fd=self.rejected.fd)
        except OSError:
            self.rejected.unlink(why)
            raise
        return target

    def _free_name(self, original: str) -> str:
        """A name in rejected/ such that neither it nor its ``.error.json`` is taken (a
        rejected file may itself be called ``x.json.error.json``)."""
        target, n = original, 1
        while self.rejected.has(target) or self.rejected.has(f"{target}.error.json"):
            target = f"{original}.{n}"
            n += 1
        return target

    def prune_rejected(self, cutoff: float, dry_run: bool = False) -> list[str]:
        """Remove what was refused before ``cutoff`` (wall clock): each refused entry (a
        file, a link, a FIFO, a folder: never what a link points to) and its reason."""
        removed = []
        for reason in self.rejected.listdir():
            if not reason.endswith(".error.json"):
                continue
            try:
                if os.stat(reason, dir_fd=self.rejected.fd, follow_symlinks=False).st_mtime >= cutoff:
                    continue
            except FileNotFoundError:
                continue
            name = reason[: -len(".error.json")]
            removed.append(name)
            if not dry_run:
                self._remove_rejected(name)
                self.rejected.unlink(reason)
        return sorted(removed)

    def _remove_rejected(self, name: str) -> None:
        try:
            st = os.stat(name, dir_fd=self.rejected.fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            import shutil  # rarely: not on every command's way (benchmarks/cli_start.py)

            shutil.rmtree(name, dir_fd=self.rejected.fd)
        else:
            self.rejected.unlink(name)

    def rejection_reason(self, name: str) -> str | None:
        """Why the file called ``name`` was refused (the latest of that name), or None."""
        found = None
        for n in range(100):
            target = name if n == 0 else f"{name}.{n}"
            if not self.rejected.has(f"{target}.error.json"):
                break
            found = target
        if found is None:
            return None
        try:
            doc = orjson.loads(self.rejected.read(f"{found}.error.json", self._reason_owners()))
            return str(doc["reason"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _reason_owners(self) -> Owners:
        """Who may own a reason in rejected/: the spool's owner, who writes them, and the
        folder's group (a reason given to the member whose file it was is hers)."""
        st = os.stat(self.rejected.fd)
        return Owners(st.st_uid, st.st_gid)

    def rejections(self, since: float = 0.0) -> list[dict[str, Any]]:
        """What was refused at or after ``since`` (wall clock), oldest first: each reason
        document (``file``, ``rejected_at``, ``reason``) with ``name``, its name here."""
        found = []
        owners = self._reason_owners()
        for entry in self.rejected.listdir():
            if not entry.endswith(".error.json"):
                continue
            try:
                if os.stat(entry, dir_fd=self.rejected.fd, follow_symlinks=False).st_mtime < since:
                    continue
                doc = orjson.loads(self.rejected.read(entry, owners, 1 << 16))
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict):
                found.append({**doc, "name": entry[: -len(".error.json")]})
        return sorted(found, key=lambda d: str(d.get("rejected_at")))

    def rejected_since(self, since: float) -> int:
        """How many files were refused at or after ``since`` (looking at times only)."""
        count = 0
        for entry in self.rejected.listdir():
            if entry.endswith(".error.json"):
                try:
                    count += os.stat(entry, dir_fd=self.rejected.fd, follow_symlinks=False).st_mtime >= since
                except FileNotFoundError:
                    continue
        return count
