"""40 jobs of 100 ms CPU each on 2 workers: wall time of pool against ProcessPoolExecutor.

    python benchmarks/cpu_efficiency.py [--jobs 40] [--seconds 0.1]

Efficiency = ideal wall time (jobs x seconds / workers) / measured wall time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import time


from bench_tasks import burn
from harness import ScratchManager, wait_for


def pool_wall(jobs: int, seconds: float) -> float:
    manager = ScratchManager("--workers", "2")
    try:
        started = manager.drop_batch("cpu.jsonl", [{"task": "bench_tasks:burn", "args": [seconds]}] * jobs)
        wait_for(lambda: manager.count_events("done") >= jobs, timeout=600, tick=0.002)
        return time.perf_counter() - started
    finally:
        manager.stop()


def executor_wall(jobs: int, seconds: float) -> float:
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        list(pool.map(burn, [0.0, 0.0]))  # workers started first, as pool's are
        started = time.perf_counter()
        list(pool.map(burn, [seconds] * jobs))
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=0.1)
    args = parser.parse_args()
    ideal = args.jobs * args.seconds / 2
    executor = executor_wall(args.jobs, args.seconds)
    ours = pool_wall(args.jobs, args.seconds)
    print(f"ProcessPoolExecutor: {executor:.3f} s wall, efficiency {ideal / executor:.0%}")
    print(f"pool:                {ours:.3f} s wall, efficiency {ideal / ours:.0%}")
    print(f"  wall time pool / ProcessPoolExecutor: {ours / executor:.3f} (target <= 1.03)")


if __name__ == "__main__":
    main()
