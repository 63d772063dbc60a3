"""Tiny-job throughput, end to end, 2 workers: pool against what a user would pick instead.

    python benchmarks/throughput.py [--jobs 2000]

pool: N do-nothing jobs dropped at once (one .jsonl file, and N single .json files),
timed from the drop to the last job's status saying done. Peers in the same run:
ProcessPoolExecutor.submit (in memory, nothing persisted), a multiprocessing.Process per
job (fork), and huey with file storage and 2 process workers when it is installed
(skipped with a note otherwise; task-spooler is not driven from here).
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import subprocess
import sys
import time

import orjson
from harness import noop_batch_seconds, noop_files_seconds
from peers import executor, noop


def process_per_job(jobs: int) -> float:
    context = multiprocessing.get_context("fork")
    started = time.perf_counter()
    running: list[multiprocessing.process.BaseProcess] = []
    for _ in range(jobs):
        if len(running) >= 2:
            running.pop(0).join()
        process = context.Process(target=noop)
        process.start()
        running.append(process)
    for process in running:
        process.join()
    return time.perf_counter() - started


def huey_files(jobs: int) -> float | None:
    """huey, file storage, 2 process workers; None when huey is not installed."""
    if importlib.util.find_spec("huey") is None:
        return None
    out = subprocess.run([sys.executable, "huey_peer.py", str(jobs), "file"], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.abspath(__file__)), timeout=600)
    return float(orjson.loads(out.stdout.strip().splitlines()[-1])["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    n = args.jobs
    results = {
        "ProcessPoolExecutor.submit (in memory)": executor(n).seconds,
        "a multiprocessing.Process per job (fork)": process_per_job(n),
        "pool, one .jsonl batch": noop_batch_seconds(n),
        "pool, one .json file per job": noop_files_seconds(n),
    }
    huey = huey_files(n)
    if huey is None:
        print("huey: not installed, skipped (pip install huey to compare)")
    else:
        results["huey, file storage, 2 process workers"] = huey
    baseline = n / results["ProcessPoolExecutor.submit (in memory)"]
    for name, seconds in results.items():
        rate = n / seconds
        print(f"{name:<44} {rate:8.0f} jobs/s   ratio to ProcessPoolExecutor {rate / baseline:5.2f}")


if __name__ == "__main__":
    main()
