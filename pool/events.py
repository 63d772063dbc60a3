"""``events.jsonl``: one line per state change of any job, the spool's central log.

Lines are appended with ``O_APPEND`` in one write each (a manager appends a loop turn's
lines in one write), so they never interleave. The manager keeps the log bounded: once
it passes ``max_bytes`` it becomes ``events.1.jsonl`` (replacing the one before) and a
new log starts, so the two together never hold much more than twice that.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import orjson

from .model import encode_json
from .safeio import Folder, Owners, UnsafeFile

log = logging.getLogger(__name__)

NAME = "events.jsonl"
PREVIOUS = "events.1.jsonl"
DEFAULT_MAX_BYTES = 32 * 1024 * 1024


class EventLog:
    def __init__(self, folder: Folder, mode: Callable[[], int], buffered: bool = False,
                 max_bytes: int | None = None) -> None:
        self.folder = folder
        self.mode = mode  # the file's mode: group-readable in a shared spool
        self.buffered = buffered  # the manager appends a loop turn's events at once
        self.max_bytes = max_bytes  # only the manager rotates: it is the one steady writer
        self.lines: list[bytes] = []
        self._owners: Owners | None = None

    def append(self, event: dict[str, Any]) -> None:
        self.lines.append(encode_json(event) + b"\n")  # a reason may quote a name that is not UTF-8
        if not self.buffered:
            self.flush()

    def flush(self) -> None:
        if not self.lines:
            return
        data = b"".join(self.lines)
        self.lines.clear()
        try:
            self._owners = self._owners or Owners(os.stat(self.folder.fd).st_uid)
            # Opened for each append, not kept: a log rotated by someone else is not
            # written behind their back, and no idle descriptor pins the filesystem.
            fd = self.folder.open_append(NAME, self._owners, self.mode())
            try:
                os.write(fd, data)
                rotate = self.max_bytes is not None and os.fstat(fd).st_size > self.max_bytes
            finally:
                os.close(fd)
            if rotate:
                os.rename(NAME, PREVIOUS, src_dir_fd=self.folder.fd, dst_dir_fd=self.folder.fd)
        except (OSError, UnsafeFile) as exc:
            # The status documents are the truth; the central log is a record of them,
            # and a full disk (or a planted link) must not stop the jobs.
            log.warning("could not append %d event(s) to %s (%s)", data.count(b"\n"), NAME, exc)

    def read(self, owners: Owners, job_id: str | None = None) -> list[dict[str, Any]]:
        """The events still kept (the previous log, then the current one), of one job or all."""
        events = []
        for name in (PREVIOUS, NAME):
            try:
                data = self.folder.read(name, owners, 1 << 62)
            except (OSError, UnsafeFile):
                continue
            for line in data.splitlines():
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(event, dict) and (job_id is None or event.get("id") == job_id):
                    events.append(event)
        return events
