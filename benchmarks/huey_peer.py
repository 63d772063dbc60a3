"""huey with file storage and 2 process workers, as the throughput peer (when installed).

Run by throughput.py in a child process: `python huey_peer.py JOBS` prints the seconds from
the first enqueue to the last result."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import tempfile
import time

from huey import FileHuey
from huey.consumer import Consumer
from huey.exceptions import ResultTimeout

huey = FileHuey("bench", path=tempfile.mkdtemp(prefix="huey-bench-"), use_thread_lock=True)


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
        results = [noop() for _ in range(jobs)]
        lost = 0
        for result in results:
            try:
                result.get(blocking=True, timeout=10, backoff=1.0, max_delay=0.005)
            except ResultTimeout:
                lost += 1  # huey's file storage can lose a task when two workers race for it
        print(f"lost {lost}", file=sys.stderr)
        print(time.perf_counter() - started)
    finally:
        os.kill(consumer.pid, signal.SIGINT)  # huey's consumer stops on SIGINT, with its workers
        consumer.join(timeout=30)


if __name__ == "__main__":
    main()
