"""Shared pieces of the benchmark scripts: a manager on a scratch spool, job drops, stats."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).parent
WARM_UP_JOBS = 4


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def describe(values_ms: list[float]) -> str:
    return (f"p50 {statistics.median(values_ms):.2f} ms, p90 {percentile(values_ms, 90):.2f} ms "
            f"(n={len(values_ms)})")


def in_turn(names: Any, round_number: int) -> list[Any]:
    """The peers of one round, first to last: the other way round every other round, so
    neither always runs on a disk the other has just warmed (or filled)."""
    order = list(names)
    return order if round_number % 2 == 0 else order[::-1]


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, tick: float = 0.0002) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not met")
        time.sleep(tick)


class EventTail:
    """events.jsonl, read as it grows: each look reads only the bytes appended since the
    one before, and follows the file across its rotation (to events.1.jsonl) by reading
    the old one to its end first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: Any = None
        self.partial = b""
        self.counts: dict[bytes, int] = {}

    def count(self, pattern: bytes) -> int:
        self._read()
        return self.counts.get(pattern, 0)

    def _read(self) -> None:
        while True:
            if self.file is None:
                try:
                    self.file = open(self.path, "rb")  # noqa: SIM115 (kept open between looks)
                except FileNotFoundError:
                    return
            self._take(self.file.read())
            try:
                rotated = os.stat(self.path).st_ino != os.fstat(self.file.fileno()).st_ino
            except FileNotFoundError:
                rotated = False
            if not rotated:
                return
            self._take(self.file.read())  # what the old one got before it was renamed
            self.file.close()
            self.file = None

    def _take(self, data: bytes) -> None:
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            start = line.find(b'"to":"')
            if start >= 0:
                key = line[start:line.index(b'"', start + 6) + 1]
                self.counts[key] = self.counts.get(key, 0) + 1


# The folder a benchmark keeps its scratch in to its end (``scratch_kept_to_the_end``),
# handed to the scripts it runs for each peer through the environment.
KEPT_TO_THE_END = "POOL_BENCH_SCRATCH"


@contextlib.contextmanager
def scratch_kept_to_the_end() -> Iterator[None]:
    """Scratch spools and peers' folders made within are removed when it ends, not each
    as its run ends. On an ext4 with no journal (this machine's), the inode allocator
    passes over every inode freed in the last minute (six, while its table's block is
    dirty), one at a time, for each file it creates: a run after the removal of another
    run's thousands of files created each of its own up to 10x slower (perf: ext4_create
    -> recently_deleted, 70% of the kernel's time), and SQLite's and Redis' peers, which
    create no file a task, did not pay for it. Pool did, in whichever round came next."""
    root = tempfile.mkdtemp(prefix="pool-bench-all-")
    before = os.environ.get(KEPT_TO_THE_END)
    os.environ[KEPT_TO_THE_END] = root
    try:
        yield
    finally:
        if before is None:
            del os.environ[KEPT_TO_THE_END]
        else:
            os.environ[KEPT_TO_THE_END] = before
        shutil.rmtree(root, ignore_errors=True)


def scratch_folder(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix, dir=os.environ.get(KEPT_TO_THE_END))


def remove_scratch(folder: str | Path) -> None:
    """Remove a run's scratch now, unless a benchmark keeps it to its end."""
    if not os.environ.get(KEPT_TO_THE_END):
        shutil.rmtree(folder, ignore_errors=True)


class ScratchManager:
    """``pool serve`` on a temporary spool, with the benchmark tasks."""

    def __init__(self, *args: str, spool: Path | None = None, pool: tuple[str, ...] | None = None,
                 source: Path | None = None) -> None:
        """``pool``: the command that runs pool (default: this checkout's); ``source``: the
        checkout it comes from, put on PYTHONPATH (another version, for side-by-side runs)."""
        self.scratch = spool is None  # a spool of its own, removed once stopped
        self.spool = spool or Path(scratch_folder("pool-bench-")) / "spool"
        self.spool.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(source or HERE.parent)]))
        self.log = open(self.spool.parent / "manager.log", "ab")
        self.events = EventTail(self.spool / "events.jsonl")
        self.watch: int | None = None  # an inotify descriptor, once something waits
        command = pool or (sys.executable, "-m", "pool")
        self.traced = command[0] == "strace"
        self.proc = subprocess.Popen(
            [*command, "--spool", str(self.spool), "serve", "--tasks", "bench_tasks", *args],
            env=env, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL, cwd=str(HERE))
        wait_for(lambda: (self.spool / "manager.pid").exists(), 30, 0.01)
        self.warm_up()

    def warm_up(self) -> None:
        """Run one job per worker first: what is measured is serving, not starting."""
        for n in range(WARM_UP_JOBS):
            self.drop(f"warm-{n}.json", {"task": "bench_tasks:noop", "id": f"warm-{n}"})
        wait_for(lambda: all((d := self.status(f"warm-{n}")) and d["state"] == "done"
                             for n in range(WARM_UP_JOBS)), 60, 0.01)

    def drop(self, name: str, job: dict[str, Any]) -> float:
        """Write a job file the safe way; returns the wall-clock time it appeared."""
        return self.drop_timed(name, job)[1]

    def drop_timed(self, name: str, job: dict[str, Any]) -> tuple[float, float]:
        """The same; returns the wall-clock times its writer began (before the job is even
        encoded: where a user's clock starts) and when it appeared (renamed into place)."""
        began = time.time()
        tmp = self.spool / "incoming" / f".{name}.tmp"
        tmp.write_bytes(orjson.dumps(job))
        os.rename(tmp, self.spool / "incoming" / name)
        return began, time.time()

    def drop_batch(self, name: str, jobs: list[dict[str, Any]]) -> float:
        """Write a .jsonl of ``jobs`` aside, rename it in; returns the perf_counter time
        of the rename, when the batch appeared."""
        tmp = self.spool / "incoming" / f".{name}.tmp"
        tmp.write_bytes(b"\n".join(orjson.dumps(job) for job in jobs))
        started = time.perf_counter()
        os.rename(tmp, self.spool / "incoming" / name)
        return started

    def wait_events(self, to_state: str, count: int, timeout: float = 600.0) -> None:
        """Block until ``count`` events into ``to_state`` were appended: woken by inotify
        when the spool's folder changes (events.jsonl is appended to), not by a timer, so
        the wait takes no core from the jobs measured, as a peer's caller blocked on a
        result takes none. A look each second all the same, should a wake-up be missed."""
        self.block_until(lambda: self.count_events(to_state) >= count, timeout,
                          f"{count} jobs {to_state}")

    def wait_status(self, job_id: str, predicate: Callable[[dict[str, Any]], Any], timeout: float = 60.0) -> \
            dict[str, Any]:
        """Block until the job's status document satisfies ``predicate``; returns it.
        Woken by inotify when a status is renamed into place, not by a timer."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            doc = self.status(job_id)
            if doc is not None and predicate(doc):
                found.append(doc)
            return bool(found)

        self.block_until(seen, timeout, f"job {job_id}")
        return found[0]

    def block_until(self, done: Callable[[], Any], timeout: float, what: str) -> None:
        if self.watch is None:
            from pool.inotify import IN_CREATE, IN_MODIFY, IN_MOVED_TO, open_watches

            opened = open_watches([(self.spool, IN_MODIFY | IN_CREATE | IN_MOVED_TO),
                                   (self.spool / "status", IN_MOVED_TO)])
            assert opened is not None and min(opened[1]) >= 0, "inotify is needed to wait without polling"
            self.watch = opened[0]
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{what} not seen in {timeout:g}s")
            if select.select([self.watch], [], [], min(left, 1.0))[0]:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.watch, 1 << 16)

    def count_events(self, to_state: str) -> int:
        """Events into ``to_state`` so far, less the warm-up jobs'. Only what was appended
        since the last look is read (``EventTail``): reading the whole log every few
        milliseconds, as this once did, took the disk and a core from what it measured."""
        count = self.events.count(f'"to":"{to_state}"'.encode())
        return count - WARM_UP_JOBS if to_state in ("queued", "running", "done") else count

    def status(self, job_id: str) -> dict[str, Any] | None:
        try:
            return orjson.loads((self.spool / "status" / f"{job_id}.json").read_bytes())  # type: ignore[no-any-return]
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None

    def stop(self, keep: bool = False) -> None:
        """SIGTERM the manager and wait for it (under strace, which does not pass a SIGTERM
        on to what it traces, the manager is strace's child). A spool of its own is then
        removed (a run left hundreds behind in /tmp), unless ``keep``, or a benchmark
        failed: its spool and the manager's log are then kept, and their place said."""
        if self.traced:
            children = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
            for pid in children.split():
                os.kill(int(pid), signal.SIGTERM)
        else:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.close()
        if self.events.file is not None:
            self.events.file.close()
        if self.watch is not None:
            os.close(self.watch)
        if self.scratch and not keep:
            if sys.exc_info()[0] is None:  # called from a `finally` while a failure goes up: kept
                remove_scratch(self.spool.parent)
            else:
                print(f"kept for a look: {self.spool.parent}", file=sys.stderr)


def noop_batch_seconds(jobs: int, pool: tuple[str, ...] | None = None, source: Path | None = None,
                       serve_args: tuple[str, ...] = ()) -> float:
    """Seconds from a .jsonl of ``jobs`` do-nothing jobs appearing to the last one done
    (2 workers; ``pool``, ``source``: as for ScratchManager; ``serve_args``: pool serve's)."""
    manager = ScratchManager("--workers", "2", *serve_args, pool=pool, source=source)
    try:
        started = manager.drop_batch("batch.jsonl", [{"task": "bench_tasks:noop"}] * jobs)
        manager.wait_events("done", jobs)
        return time.perf_counter() - started
    finally:
        manager.stop()


def noop_files_seconds(jobs: int, pool: tuple[str, ...] | None = None, source: Path | None = None,
                       serve_args: tuple[str, ...] = ()) -> float:
    """The same with a .json file per job, dropped one after another."""
    manager = ScratchManager("--workers", "2", *serve_args, pool=pool, source=source)
    try:
        started = time.perf_counter()
        for n in range(jobs):
            manager.drop(f"j{n}.json", {"task": "bench_tasks:noop", "id": f"j{n}"})
        manager.wait_events("done", jobs)
        return time.perf_counter() - started
    finally:
        manager.stop()


def iso_to_epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
