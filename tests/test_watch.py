"""The manager's own inotify descriptor on a folder (pool/watch.py, FolderWatch): the names
of files renamed in or closed after writing, every one, however many came at once."""

from __future__ import annotations

import os
import struct
from collections import deque
from pathlib import Path

from pool.inotify import IN_CLOSE_WRITE, IN_CREATE, IN_DELETE, IN_MODIFY, IN_MOVED_FROM, IN_MOVED_TO, IN_Q_OVERFLOW
from pool.watch import COMPLETE, GONE, WRITING, FolderWatch, WakeHandler


def test_a_folder_watch_names_each_file_renamed_in_or_written(tmp_path: Path) -> None:
    watch = FolderWatch.open(str(tmp_path))
    assert watch is not None
    try:
        assert watch.names() == []
        names = [f"job-{n}-{'x' * (n % 40)}.json" for n in range(300)]  # more than one read's worth
        for name in names:
            (tmp_path / f".{name}.tmp").write_text("{}")  # closed after writing: heard too
            os.rename(tmp_path / f".{name}.tmp", tmp_path / name)
        heard = watch.names()
        assert [n for n in heard if not n.startswith(".")] == names
        assert watch.names() == []  # read once
    finally:
        watch.close()


def test_what_the_manager_hears_itself_is_noted_as_watchdogs_events_are(tmp_path: Path) -> None:
    notes: deque[tuple[str, str]] = deque()
    handler = WakeHandler(str(tmp_path), [], notes, lambda: None)
    assert handler.heard(str(tmp_path), [(".a.json.tmp", IN_CLOSE_WRITE), ("a.json", IN_MOVED_TO),
                                         (".claimed~1234~b.json", IN_MOVED_TO)]) is True
    assert list(notes) == [("a.json", COMPLETE)]  # a writer's temp file and our own claim are not jobs
    assert handler.heard(str(tmp_path), [(".c.tmp", IN_CLOSE_WRITE)]) is False
    notes.clear()
    assert handler.heard(str(tmp_path), [("d.json", IN_CREATE), ("d.json", IN_MODIFY), ("d.json", IN_CLOSE_WRITE),
                                         ("e.json", IN_MOVED_FROM), ("f.json", IN_DELETE)]) is True
    assert list(notes) == [("d.json", WRITING), ("d.json", WRITING), ("d.json", COMPLETE), ("e.json", GONE),
                           ("f.json", GONE)]


def test_a_folder_watch_says_when_the_kernel_dropped_events() -> None:
    """Past the kernel's queue of events (fs.inotify.max_queued_events) names are lost, and
    one event without a name says so: the manager must then list the folder."""
    read_end, write_end = os.pipe2(os.O_NONBLOCK)
    watch = FolderWatch(read_end)  # the descriptor as FolderWatch reads it: struct inotify_event
    try:
        name = b"a.json\0\0"
        os.write(write_end, struct.pack("iIII", 1, IN_MOVED_TO, 0, len(name)) + name
                 + struct.pack("iIII", -1, IN_Q_OVERFLOW, 0, 0))
        assert watch.names() == ["a.json"]
        assert watch.overflowed
    finally:
        watch.close()
        os.close(write_end)
