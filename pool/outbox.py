"""An executor's job files, written by a thread of its own: one file for what was
submitted since the last write.

    submit --put(id, encoded job, future)--> the outbox --its thread--> incoming/
        one job waiting       incoming/<id>.json, as `pool submit` writes it
        several waiting       incoming/<first id>.jsonl, one line each, in submission
                              order (a manager takes a .jsonl in whole, or refuses it whole)

A loop of submits returns as fast as jobs can be encoded, and the manager takes in a
burst as one file instead of one file per job: a file is the costly part of a tiny job
for the caller and for the manager (benchmarks/futures.py). A single submit is written
at once (the thread is woken), so nothing waits for a batch to fill.

What is put here is the caller's until it is written: ``take`` gives back a job not yet
written (a cancel needs no request), ``flush`` returns once everything put is in
incoming/ (``Executor.shutdown``, and an executor collected or alive at exit, flush
first). A job put here is lost only with its caller (``kill -9`` before the write,
a moment after ``submit`` returned), as every job of a ProcessPoolExecutor is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .safeio import Folder

if TYPE_CHECKING:
    from .futures import JobFuture

MAX_LINES = 5000  # jobs in one file: a manager checks a .jsonl whole before taking it in
MAX_BYTES = 1 << 20  # bytes in one file of several jobs (a manager may refuse big files unread)


@dataclass
class Outgoing:
    job_id: str
    data: bytes  # the job's document, encoded (one line: JSON has no raw newline)
    future: JobFuture  # told ``unwritten(exc)`` when its file cannot be written


class Outbox:
    def __init__(self, folder: Folder, mode: int, on_batch: Callable[[list[Outgoing]], None]) -> None:
        self.folder = folder
        self.mode = mode
        self.on_batch = on_batch  # told of every file of several jobs, before it is written
        self.cond = threading.Condition()
        self.pending: list[Outgoing] = []
        self.writing = False
        self.closed = False
        self.thread: threading.Thread | None = None

    def put(self, outgoing: Outgoing) -> None:
        with self.cond:
            if self.closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self.pending.append(outgoing)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="pool-outbox", daemon=True)
                self.thread.start()
            elif not self.writing:
                self.cond.notify()

    def take(self, job_ids: set[str]) -> set[str]:
        """Take back the jobs of ``job_ids`` not written yet; says which were."""
        with self.cond:
            taken = {o.job_id for o in self.pending if o.job_id in job_ids}
            self.pending = [o for o in self.pending if o.job_id not in taken]
            return taken

    def flush(self) -> None:
        """Return once everything put so far is written (or failed to be). In the outbox's
        own thread (a future's callback, told of a failed write) it returns at once."""
        if threading.current_thread() is self.thread:
            return
        with self.cond:
            while self.pending or self.writing:
                self.cond.wait()

    def close(self) -> None:
        """Flush; nothing may be put afterwards, and the thread ends."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.flush()

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.pending and not self.closed:
                    self.cond.wait()
                if not self.pending:
                    return
                batch, self.pending = self.pending, []
                self.writing = True
            try:
                for part in split(batch):
                    self._write(part)
            finally:
                with self.cond:
                    self.writing = False
                    self.cond.notify_all()

    def _write(self, part: list[Outgoing]) -> None:
        if len(part) == 1:
            name, data = f"{part[0].job_id}.json", part[0].data
        else:
            name, data = f"{part[0].job_id}.jsonl", b"\n".join(o.data for o in part) + b"\n"
            self.on_batch(part)
        try:
            self.folder.write_atomic(name, data, self.mode)
        except Exception as exc:  # a full disk, a folder taken away: each job's future hears it
            for outgoing in part:
                outgoing.future.unwritten(exc)


def split(batch: list[Outgoing]) -> list[list[Outgoing]]:
    """``batch`` in files of at most MAX_LINES jobs and MAX_BYTES bytes (a job bigger
    than that goes alone)."""
    parts: list[list[Outgoing]] = []
    size = 0
    for outgoing in batch:
        if not parts or len(parts[-1]) >= MAX_LINES or size + len(outgoing.data) + 1 > MAX_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(outgoing)
        size += len(outgoing.data) + 1
    return parts
