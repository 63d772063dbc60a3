"""100,000 jobs queued at once in one .jsonl file.

    python benchmarks/big_batch.py [--jobs 100000]

Reports the time until every job is accepted (has its queued status), the manager's
peak memory, and the throughput over the whole batch against a 2,000-job batch. With
``--kill-probe``, a job that runs until killed is started first, and killed once a tenth
of the batch is in (while the rest is taken in): the time from the kill request to its
process gone and its status `cancelled` says whether the loop stalls (issue 23: ≤ 1 s).
"""

from __future__ import annotations

import argparse
import time


from harness import ScratchManager, wait_for
from idle import rss_mb

import pool


def run(jobs: int, kill_probe: bool = False) -> tuple[float, float, float, float | None]:
    manager = ScratchManager("--workers", "2")
    try:
        if kill_probe:
            manager.drop("probe.json", {"task": "bench_tasks:forever", "id": "probe"})
            manager.wait_status("probe", lambda d: d["state"] == "running")
        started = manager.drop_batch("big.jsonl", [{"task": "bench_tasks:noop"}] * jobs)
        peak = 0.0

        def count(state: str) -> int:
            nonlocal peak
            peak = max(peak, rss_mb(manager.proc.pid))
            return manager.count_events(state)

        killed = None
        if kill_probe:
            wait_for(lambda: count("queued") >= jobs // 10, timeout=3600, tick=0.2)
            asked = time.perf_counter()
            pool.Spool(manager.spool).cancel("probe")
            manager.wait_status("probe", lambda d: d["state"] == "cancelled")
            killed = time.perf_counter() - asked
            assert count("queued") < jobs, "the batch was all in before the kill was carried out"
        wait_for(lambda: count("queued") >= jobs, timeout=3600, tick=0.2)
        accepted = time.perf_counter() - started
        wait_for(lambda: count("done") >= jobs, timeout=3600, tick=0.2)
        return accepted, time.perf_counter() - started, peak, killed
    finally:
        manager.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--kill-probe", action="store_true", help="Time a kill while the batch is taken in.")
    args = parser.parse_args()
    _, short, _, _ = run(2000)
    accepted, total, peak, killed = run(args.jobs, args.kill_probe)
    print(f"{args.jobs} jobs: all accepted in {accepted:.1f} s (target <= 10 s), all done in {total:.1f} s; "
          f"manager peak RSS {peak:.0f} MB (target <= 300 MB)")
    if killed is not None:
        print(f"a kill while the batch was taken in: carried out (cancelled) in {killed * 1000:.0f} ms "
              f"(target <= 1 s)")
    print(f"throughput {args.jobs / total:.0f} jobs/s against {2000 / short:.0f} jobs/s for 2,000 "
          f"(ratio {2000 / short / (args.jobs / total):.2f}, target <= 2)")


if __name__ == "__main__":
    main()
