"""Drop -> started_at latency, kill -> process gone, and the cost of pool.progress().

    python benchmarks/core_latency.py [--jobs 200]

Peers in the same run: ProcessPoolExecutor.submit -> the function running, and
subprocess.Popen of a Python one-liner -> it running (a process per job).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import select
import statistics
import subprocess
import sys
import time
import timeit
from pathlib import Path

from harness import ScratchManager, describe, iso_to_epoch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pool  # noqa: E402
from pool.progress import set_reporter  # noqa: E402


def started_at_latency(jobs: int, pool: tuple[str, ...] | None = None, source: Path | None = None,
                       from_write: bool = False) -> list[float]:
    """Drop -> started_at of ``jobs`` jobs, one at a time, 1 worker (``pool``/``source``:
    another version of pool, see harness.ScratchManager), counted from the job file's
    appearance, or (``from_write``) from the moment its writer began. The wait for each
    blocks on inotify: a waiter polling every 0.2 ms, as this once did, took a core's
    share from the manager and the worker it measured."""
    manager = ScratchManager("--workers", "1", pool=pool, source=source)
    try:
        latencies = []
        for n in range(jobs):
            began, appeared = manager.drop_timed(f"j{n}.json", {"task": "bench_tasks:noop", "id": f"j{n}"})
            doc = manager.wait_status(f"j{n}", lambda d: d.get("started_at"))
            latencies.append((iso_to_epoch(doc["started_at"]) - (began if from_write else appeared)) * 1000)
        return latencies
    finally:
        manager.stop()


def _now() -> float:
    return time.time()


def executor_latency(jobs: int) -> list[float]:
    latencies = []
    with concurrent.futures.ProcessPoolExecutor(1) as executor:
        executor.submit(_now).result()  # start the worker first, as pool's are started
        for _ in range(jobs):
            submitted = time.time()
            latencies.append((executor.submit(_now).result() - submitted) * 1000)
    return latencies


def popen_latency(jobs: int) -> list[float]:
    latencies = []
    for _ in range(jobs):
        submitted = time.time()
        out = subprocess.run([sys.executable, "-S", "-c", "import time; print(time.time())"],
                             capture_output=True, text=True, check=True).stdout
        latencies.append((float(out) - submitted) * 1000)
    return latencies


def kill_latency(rounds: int) -> list[float]:
    manager = ScratchManager("--workers", "1")
    spool = pool.Spool(manager.spool)
    try:
        latencies = []
        for n in range(rounds):
            manager.drop(f"k{n}.json", {"task": "bench_tasks:forever", "id": f"k{n}"})
            doc = manager.wait_status(f"k{n}", lambda d: d["state"] == "running")
            pidfd = os.pidfd_open(doc["pid"])  # readable once the process has ended: no polling
            try:
                asked = time.perf_counter()
                spool.cancel(f"k{n}")
                select.select([pidfd], [], [], 60)
                latencies.append((time.perf_counter() - asked) * 1000)
            finally:
                os.close(pidfd)
            manager.wait_status(f"k{n}", lambda d: d["state"] == "cancelled")
        return latencies
    finally:
        manager.stop()


class IdleReporter:
    next_write = float("inf")  # nothing is due: the hot-loop case
    latest = None

    def write(self) -> None:
        raise AssertionError("not due")


def progress_cost() -> tuple[float, float]:
    """ns per call inside a worker with nothing due, and outside a worker."""
    number = 1_000_000
    set_reporter(IdleReporter())
    inside = min(timeit.repeat("progress(i, 100)", setup="i = 5", globals={"progress": pool.progress},
                               number=number, repeat=5)) / number * 1e9
    set_reporter(None)
    outside = min(timeit.repeat("progress(i, 100)", setup="i = 5", globals={"progress": pool.progress},
                                number=number, repeat=5)) / number * 1e9
    return inside, outside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--kills", type=int, default=20)
    args = parser.parse_args()
    pool_ms = started_at_latency(args.jobs)
    written_ms = started_at_latency(args.jobs, from_write=True)
    executor_ms = executor_latency(args.jobs)
    popen_ms = popen_latency(min(args.jobs, 50))
    print(f"drop -> started_at, pool (1 worker):          {describe(pool_ms)}")
    print(f"  from the writer's first step (target p50 <= 2 ms): {describe(written_ms)}")
    print(f"submit -> running, ProcessPoolExecutor(1):    {describe(executor_ms)}")
    print(f"Popen -> running, a process per job:          {describe(popen_ms)}")
    print(f"  ratio pool / ProcessPoolExecutor (p50):     {statistics.median(pool_ms) / statistics.median(executor_ms):.1f}x")
    print(f"  ratio pool / process per job (p50):         {statistics.median(pool_ms) / statistics.median(popen_ms):.2f}x")
    kills = kill_latency(args.kills)
    print(f"kill request -> process gone (SIGTERM):       {describe(kills)}")
    inside, outside = progress_cost()
    print(f"pool.progress() in a worker, nothing due:     {inside:.0f} ns a call")
    print(f"pool.progress() outside a worker:             {outside:.0f} ns a call")


if __name__ == "__main__":
    main()
