"""100,000 jobs queued at once in one .jsonl file.

    python benchmarks/big_batch.py [--jobs 100000]

Reports the time until every job is accepted (has its queued status), the manager's
peak memory, and the throughput over the whole batch against a 2,000-job batch.
"""

from __future__ import annotations

import argparse
import time


from harness import ScratchManager, wait_for
from idle import rss_mb


def run(jobs: int) -> tuple[float, float, float]:
    manager = ScratchManager("--workers", "2")
    try:
        started = manager.drop_batch("big.jsonl", [{"task": "bench_tasks:noop"}] * jobs)
        peak = 0.0

        def count(state: str) -> int:
            nonlocal peak
            peak = max(peak, rss_mb(manager.proc.pid))
            return manager.count_events(state)

        wait_for(lambda: count("queued") >= jobs, timeout=3600, tick=0.2)
        accepted = time.perf_counter() - started
        wait_for(lambda: count("done") >= jobs, timeout=3600, tick=0.2)
        return accepted, time.perf_counter() - started, peak
    finally:
        manager.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args()
    _, short, _ = run(2000)
    accepted, total, peak = run(args.jobs)
    print(f"{args.jobs} jobs: all accepted in {accepted:.1f} s (target <= 10 s), all done in {total:.1f} s; "
          f"manager peak RSS {peak:.0f} MB (target <= 300 MB)")
    print(f"throughput {args.jobs / total:.0f} jobs/s against {2000 / short:.0f} jobs/s for 2,000 "
          f"(ratio {2000 / short / (args.jobs / total):.2f}, target <= 2)")


if __name__ == "__main__":
    main()
