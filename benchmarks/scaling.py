"""How pool scales: with its workers, and with the jobs it holds (issue 23, target 6).

    python benchmarks/scaling.py [--jobs 2000] [--workers 1 2 4] [--held 20000] [--rounds 3]

1. Tiny-job throughput (N no-op jobs in one .jsonl) and CPU-bound efficiency (10 x 100 ms
   jobs a worker, against ProcessPoolExecutor with as many workers), for each number of
   workers, interleaved round by round. On a machine with fewer cores than workers the
   CPU-bound jobs share the cores, and so do ProcessPoolExecutor's.
2. Whether a job costs more when many are held: the same N no-op jobs (2 workers) on a
   fresh spool, on one that keeps --held done jobs in status/, and on one with --held
   jobs queued behind them (of a lower priority), each timed from the drop to the N-th
   of *them* done.
Every wait blocks on inotify (harness.ScratchManager): nothing polls beside what is measured.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import time

from bench_tasks import burn
from harness import ScratchManager, in_turn

NOOP = {"task": "bench_tasks:noop"}


def noop_throughput(workers: int, jobs: int) -> float:
    manager = ScratchManager("--workers", str(workers))
    try:
        started = manager.drop_batch("batch.jsonl", [NOOP] * jobs)
        manager.wait_events("done", jobs)
        return jobs / (time.perf_counter() - started)
    finally:
        manager.stop()


def cpu_ratio(workers: int, seconds: float = 0.1, per_worker: int = 10) -> float:
    """Wall time pool / ProcessPoolExecutor, per_worker x workers jobs of ``seconds``."""
    jobs = per_worker * workers
    with concurrent.futures.ProcessPoolExecutor(workers) as executor:
        list(executor.map(burn, [0.0] * workers))
        started = time.perf_counter()
        list(executor.map(burn, [seconds] * jobs))
        theirs = time.perf_counter() - started
    manager = ScratchManager("--workers", str(workers))
    try:
        started = manager.drop_batch("cpu.jsonl", [{"task": "bench_tasks:burn", "args": [seconds]}] * jobs)
        manager.wait_events("done", jobs)
        ours = time.perf_counter() - started
    finally:
        manager.stop()
    return ours / theirs


def held_throughput(jobs: int, held: int, how: str) -> float:
    """N no-op jobs (2 workers) with ``held`` others: none, done ones kept, or queued."""
    manager = ScratchManager("--workers", "2")
    try:
        if how == "done":
            manager.drop_batch("kept.jsonl", [NOOP] * held)
            manager.wait_events("done", held)
        elif how == "queued":  # behind them: the workers run a few meanwhile, the rest wait
            manager.drop_batch("behind.jsonl", [{**NOOP, "priority": -1}] * held)
            manager.wait_events("queued", held)
        base = manager.count_events("done")
        started = manager.drop_batch("batch.jsonl", [{**NOOP, "priority": 1}] * jobs)
        manager.wait_events("done", base + jobs)
        return jobs / (time.perf_counter() - started)
    finally:
        manager.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--held", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    throughput: dict[int, list[float]] = {w: [] for w in args.workers}
    ratios: dict[int, list[float]] = {w: [] for w in args.workers}
    for round_number in range(args.rounds):
        for workers in in_turn(args.workers, round_number):
            throughput[workers].append(noop_throughput(workers, args.jobs))
            ratios[workers].append(cpu_ratio(workers))
        print(f"round {round_number + 1} done", flush=True)
    print("\nworkers | tiny jobs/s, median (min-max) | CPU-bound wall pool / ProcessPoolExecutor, median (min-max)")
    for workers in args.workers:
        t, r = throughput[workers], ratios[workers]
        print(f"{workers:7d} | {statistics.median(t):7.0f} ({min(t):.0f}-{max(t):.0f}) | "
              f"{statistics.median(r):.3f} ({min(r):.3f}-{max(r):.3f})")
    held: dict[str, list[float]] = {"none": [], "done": [], "queued": []}
    for round_number in range(args.rounds):
        for how in in_turn(held, round_number):
            held[how].append(held_throughput(args.jobs, args.held, how))
    print(f"\n{args.jobs} tiny jobs, 2 workers, with {args.held} other jobs held: jobs/s, median (min-max)")
    for how, values in held.items():
        print(f"{how:>7} | {statistics.median(values):7.0f} ({min(values):.0f}-{max(values):.0f}) | "
              f"{statistics.median(values) / statistics.median(held['none']):.2f} of none")


if __name__ == "__main__":
    main()
