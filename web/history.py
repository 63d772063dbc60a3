"""What happened, tallied from events.jsonl: the counters and the duration histogram of
/metrics, and the per-minute series the charts draw (jobs done and failed, queue depth).

The log is read on from where the last look stopped, a line at a time as it was
appended, so a scrape or a page costs what was appended since, not the log's size (a
full log is 32 MiB). When the manager rotates it (events.jsonl becomes events.1.jsonl),
the rest of the old one is read there; when it was trimmed (`pool prune`) or replaced,
the tally starts over from what is kept, and its counters go back with it, which
Prometheus reads as a counter reset. A line that is not an event is skipped.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from pool.events import NAME, PREVIOUS
from pool.safeio import UnsafeFile
from pool.spool import SpoolDir

# Seconds an attempt took (its ``usage.wall``): a few milliseconds to half a day.
BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0)
QUEUED = frozenset({"queued", "waiting"})  # waiting to run: the queue's depth
ENDED = ("done", "failed", "cancelled")
KEEP_MINUTES = 24 * 60  # per-minute series kept: a day
READ_AT_ONCE = 8 << 20  # bytes of the log read at a time


@dataclass
class Minute:
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    queued: int = 0  # jobs that came into the queue (queued or waiting) less those that left it


@dataclass
class Tally:
    ended: Counter[str] = field(default_factory=Counter)  # jobs by the final state they reached
    attempts: int = 0  # attempts begun
    requeued: int = 0  # attempts that ended with their job queued again (a retry, a stop)
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    duration_count: int = 0
    duration_sum: float = 0.0
    minutes: dict[str, Minute] = field(default_factory=dict)  # "YYYY-MM-DDTHH:MM" -> what happened in it

    def add(self, event: dict[str, Any]) -> None:
        to, was, when = event.get("to"), event.get("from"), event.get("time")
        minute = self.minutes.setdefault(when[:16], Minute()) if isinstance(when, str) and len(when) >= 16 else None
        if to == "running":
            self.attempts += 1
        elif was == "running" and to == "queued":
            self.requeued += 1
        if to in ENDED and isinstance(to, str):
            self.ended[to] += 1
            if minute is not None:
                setattr(minute, to, getattr(minute, to) + 1)
        if minute is not None and (to in QUEUED) != (was in QUEUED):
            minute.queued += 1 if to in QUEUED else -1
        usage = event.get("usage")
        wall = usage.get("wall") if isinstance(usage, dict) else None
        if isinstance(wall, (int, float)) and 0 <= wall < 1e9:
            self.duration_count += 1
            self.duration_sum += wall
            for n, bound in enumerate(BUCKETS):
                if wall <= bound:
                    self.buckets[n] += 1
                    break

    def forget_before(self, minute: str) -> None:
        for key in [k for k in self.minutes if k < minute]:
            del self.minutes[key]


class History:
    """The tally of one spool's events, kept up to date by ``update``; thread-safe."""

    def __init__(self, spool: SpoolDir) -> None:
        self.spool = spool
        self.lock = threading.Lock()
        self.tally = Tally()
        self.inode: int | None = None  # of the events.jsonl read so far
        self.offset = 0  # where its next line starts

    def update(self) -> Tally:
        """Read what was appended since the last look; returns the tally (hold no
        reference to it across calls: a trimmed log gives a new one)."""
        with self.lock:
            folder, owners = self.spool.top, self.spool.owners
            try:
                fd, st = folder.open_checked(NAME, owners, 1 << 62)
            except (OSError, UnsafeFile):
                return self.tally
            try:
                if self.inode is not None and (st.st_ino != self.inode or st.st_size < self.offset):
                    if self._finish_rotated():
                        self.offset = 0  # the new log, from its start
                    else:
                        self.tally, self.inode = Tally(), None  # trimmed or replaced: start over
                if self.inode is None:
                    self._read_previous()
                    self.offset = 0
                self.inode = st.st_ino
                self.offset = self._read(fd, self.offset)
            finally:
                os.close(fd)
            self.tally.forget_before(minute_of(datetime.now(timezone.utc) - timedelta(minutes=KEEP_MINUTES)))
            return self.tally

    def _finish_rotated(self) -> bool:
        """The log read so far is events.1.jsonl now: read the rest of it there."""
        try:
            fd, st = self.spool.top.open_checked(PREVIOUS, self.spool.owners, 1 << 62)
        except (OSError, UnsafeFile):
            return False
        try:
            if st.st_ino != self.inode or st.st_size < self.offset:
                return False
            self._read(fd, self.offset)
            return True
        finally:
            os.close(fd)

    def _read_previous(self) -> None:
        try:
            fd, _ = self.spool.top.open_checked(PREVIOUS, self.spool.owners, 1 << 62)
        except (OSError, UnsafeFile):
            return
        try:
            self._read(fd, 0)
        finally:
            os.close(fd)

    def _read(self, fd: int, offset: int) -> int:
        """Tally the whole lines from ``offset`` on; returns where the first line not
        whole yet (still being appended) starts."""
        while True:
            data = os.pread(fd, READ_AT_ONCE, offset)
            end = data.rfind(b"\n") + 1
            if not end:
                return offset
            for line in data[:end].splitlines():
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(event, dict):
                    self.tally.add(event)
            offset += end
            if len(data) < READ_AT_ONCE:
                return offset


def minute_of(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M")


def series(tally: Tally, depth_now: int, now: datetime, minutes: int) -> dict[str, Any]:
    """The last ``minutes`` minutes, oldest first: jobs done, failed and cancelled in each,
    and the queue's depth at each one's end (counted back from ``depth_now``)."""
    keys = [minute_of(now - timedelta(minutes=n)) for n in range(minutes - 1, -1, -1)]
    depth, depths = depth_now, []
    later = sum(m.queued for k, m in tally.minutes.items() if k > keys[-1])  # clocks a little apart
    depth -= later
    for key in reversed(keys):
        depths.append(max(depth, 0))
        depth -= tally.minutes[key].queued if key in tally.minutes else 0
    empty = Minute()
    picked = [tally.minutes.get(key, empty) for key in keys]
    return {"minutes": keys, "done": [m.done for m in picked], "failed": [m.failed for m in picked],
            "cancelled": [m.cancelled for m in picked], "depth": depths[::-1]}
