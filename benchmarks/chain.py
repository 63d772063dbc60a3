"""A chain of jobs, each after the one before (`"after"`), against the same jobs with no
dependencies, both on one worker (so both run one at a time), rounds interleaved.

    python benchmarks/chain.py [--jobs 1000] [--rounds 2]

The overhead of a link is the difference of the two wall times (the .jsonl appearing to
the last job done), divided by the number of jobs. The target (issue 20): at most 3 ms
a link, in every round.
"""

from __future__ import annotations

import argparse
import time

from harness import ScratchManager, in_turn, wait_for

TARGET_MS = 3.0


def seconds(jobs: int, chained: bool) -> float:
    manager = ScratchManager("--workers", "1")
    try:
        batch = [{"task": "bench_tasks:noop", "id": f"c{n}", **({"after": [f"c{n - 1}"]} if chained and n else {})}
                 for n in range(jobs)]
        started = manager.drop_batch("chain.jsonl", batch)
        wait_for(lambda: manager.count_events("done") >= jobs, timeout=600, tick=0.005)
        return time.perf_counter() - started
    finally:
        manager.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    met = True
    for round_number in range(args.rounds):
        order = in_turn([False, True], round_number)
        took = {chained: seconds(args.jobs, chained) for chained in order}
        per_link = (took[True] - took[False]) / args.jobs * 1000
        met = met and per_link <= TARGET_MS
        print(f"round {round_number + 1}: {args.jobs} jobs, 1 worker: free {took[False]:.2f} s, chained "
              f"{took[True]:.2f} s: {per_link:.2f} ms a link")
    print(f"target (<= {TARGET_MS:g} ms a link in every round): {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
