"""40 jobs of 100 ms CPU each on 2 workers: wall time of pool against ProcessPoolExecutor.

    python benchmarks/cpu_efficiency.py [--jobs 40] [--seconds 0.1] [--rounds 5] [--target 1.03]

Efficiency = ideal wall time (jobs x seconds / workers) / measured wall time. The two run
in turn, round after round (the first one first every other round); the target is met
only when every round meets it (issue 23: 40 x 100 ms <= 1.03, 10 x 1 s <= 1.01).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import time

from bench_tasks import burn
from harness import ScratchManager, in_turn


def pool_wall(jobs: int, seconds: float, *serve_args: str) -> float:
    manager = ScratchManager("--workers", "2", *serve_args)
    try:
        started = manager.drop_batch("cpu.jsonl", [{"task": "bench_tasks:burn", "args": [seconds]}] * jobs)
        manager.wait_events("done", jobs)
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
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--target", type=float, default=1.03)
    args = parser.parse_args()
    ideal = args.jobs * args.seconds / 2
    peers = {"ProcessPoolExecutor": executor_wall, "pool": pool_wall}
    ratios = []
    for round_number in range(args.rounds):
        walls = {name: peers[name](args.jobs, args.seconds) for name in in_turn(peers, round_number)}
        ratio = walls["pool"] / walls["ProcessPoolExecutor"]
        ratios.append(ratio)
        print(f"round {round_number + 1}: ProcessPoolExecutor {walls['ProcessPoolExecutor']:.3f} s "
              f"(efficiency {ideal / walls['ProcessPoolExecutor']:.1%}), pool {walls['pool']:.3f} s "
              f"(efficiency {ideal / walls['pool']:.1%}), pool / ProcessPoolExecutor {ratio:.3f}", flush=True)
    met = all(r <= args.target for r in ratios)
    print(f"{args.jobs} x {args.seconds:g} s, 2 workers: wall time pool / ProcessPoolExecutor median "
          f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) over {args.rounds} round(s); "
          f"target <= {args.target:g} in every round: {'met' if met else 'not met'}")


if __name__ == "__main__":
    main()
