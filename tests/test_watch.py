"""The manager's own inotify descriptor on a folder (pool/watch.py, FolderWatch): the names
of files renamed in or closed after writing, every one, however many came at once."""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

from pool.watch import COMPLETE, FolderWatch, WakeHandler


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
    assert handler.heard(str(tmp_path), [".a.json.tmp", "a.json", ".claimed~1234~b.json"]) is True
    assert list(notes) == [("a.json", COMPLETE)]  # a writer's temp file and our own claim are not jobs
    assert handler.heard(str(tmp_path), [".c.tmp"]) is False
