"""huey with 2 process workers, as a throughput peer: ``SqliteHuey`` (what peers.py runs)
or ``FileHuey`` (what throughput.py runs).

    python huey_peer.py JOBS [sqlite|file]

Times JOBS do-nothing tasks from the first enqueue to the last result and prints one JSON
line: ``{"seconds": ..., "lost": ..., "failed": ...}``: a task whose result never came is
lost (huey's file storage can lose one when two workers race for it), one that raised, in
the caller (SQLite's "database is locked") or in the worker, failed."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import tempfile
import time

import orjson
from huey import FileHuey, SqliteHuey
from huey.consumer import Consumer
from huey.exceptions import ResultTimeout

STORAGE = sys.argv[2] if len(sys.argv) > 2 else "file"
FOLDER = tempfile.mkdtemp(prefix="huey-bench-")
huey = (SqliteHuey("bench", filename=os.path.join(FOLDER, "huey.db")) if STORAGE == "sqlite"
        else FileHuey("bench", path=FOLDER, use_thread_lock=True))


@huey.task()
def noop() -> int:
    return 1  # huey stores no result for None, and get() would wait for one


def consume() -> None:
    Consumer(huey, workers=2, worker_type="process", periodic=False, initial_delay=0.001,
             backoff=1.0, max_delay=0.01, check_worker_health=False).run()


def main() -> None:
    jobs = int(sys.argv[1])
    consumer = multiprocessing.get_context("fork").Process(target=consume)
    consumer.start()
    noop().get(blocking=True, timeout=30)  # workers started first, as pool's are
    try:
        started = time.perf_counter()
        lost = failed = 0
        results = []
        for _ in range(jobs):
            try:
                results.append(noop())
            except Exception:
                failed += 1
        deadline = time.monotonic() + 120
        for result in results:
            try:
                result.get(blocking=True, timeout=max(0.1, deadline - time.monotonic()), backoff=1.0,
                           max_delay=0.005)
            except ResultTimeout:
                lost += 1
            except Exception:
                failed += 1
        print(orjson.dumps({"seconds": time.perf_counter() - started, "lost": lost, "failed": failed}).decode())
    finally:
        os.kill(consumer.pid, signal.SIGINT)  # huey's consumer stops on SIGINT, with its workers
        consumer.join(timeout=30)


if __name__ == "__main__":
    main()
