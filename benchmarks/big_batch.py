"""100,000 jobs queued at once in one .jsonl file.

    python benchmarks/big_batch.py [--jobs 100000]

Reports the time until every job is accepted (has its queued status), the manager's
peak memory, and the throughput over the whole batch against a 2,000-job batch.
"""

from __future__ import annotations

import argparse
import os
import time

import orjson

from harness import ScratchManager, wait_for
from idle import rss_mb


def run(jobs: int) -> tuple[float, float, float]:
    manager = ScratchManager("--workers", "2")
    events = manager.spool / "events.jsonl"
    try:
        lines = b"\n".join(orjson.dumps({"task": "bench_tasks:noop"}) for _ in range(jobs))
        tmp = manager.spool / "incoming" / ".big.tmp"
        tmp.write_bytes(lines)
        started = time.perf_counter()
        os.rename(tmp, manager.spool / "incoming" / "big.jsonl")
        peak = 0.0

        def count(state: bytes) -> int:
            nonlocal peak
            peak = max(peak, rss_mb(manager.proc.pid))
            return events.read_bytes().count(b'"to":"' + state + b'"') - 4

        wait_for(lambda: count(b"queued") >= jobs, timeout=3600, tick=0.2)
        accepted = time.perf_counter() - started
        wait_for(lambda: count(b"done") >= jobs, timeout=3600, tick=0.2)
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
