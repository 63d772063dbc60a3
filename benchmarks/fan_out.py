"""Ten thousand jobs after one (issue 20: "10,000 dependants on one job" must be neither a
crash nor a loop): each is released once its dependency is done, runs once, and the
manager answers `pool status` all the while.

    python benchmarks/fan_out.py [--dependants 10000] [--workers 2]

One `.jsonl`: a root job delayed 2 s, and N no-op jobs `after` it. The manager takes the
file in, holds the N jobs waiting, releases them when the root is done, and runs them.
Printed: the time from the drop to the last one done, how often `pool status ROOT
--json` (a whole process each time, once a second) answered, failed, and its slowest
answer, and how many ran other than once (a lost or doubled job: the target is 0).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time

import orjson
from harness import ScratchManager, wait_for

STATUS_EVERY = 1.0  # seconds between `pool status` calls while the jobs run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dependants", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    manager = ScratchManager("--workers", str(args.workers))
    try:
        jobs = [{"task": "bench_tasks:noop", "id": "root", "delay": 2}]
        jobs += [{"task": "bench_tasks:noop", "id": f"leaf{n}", "after": ["root"]} for n in range(args.dependants)]
        started = manager.drop_batch("fan.jsonl", jobs)
        # Before it is taken in, a line of a .jsonl is no job yet to `pool status`.
        wait_for((manager.spool / "status" / "root.json").exists, timeout=600, tick=0.01)
        answers: list[float] = []
        refusals: list[bytes] = []

        def all_done() -> bool:
            asked = time.perf_counter()
            answered = subprocess.run([sys.executable, "-m", "pool", "--spool", str(manager.spool), "status", "root",
                                       "--json"], capture_output=True, cwd=manager.spool.parent, check=False)
            if answered.returncode == 0:
                answers.append(time.perf_counter() - asked)
            else:
                refusals.append(answered.stderr)
            return manager.count_events("done") >= args.dependants + 1

        wait_for(all_done, timeout=600, tick=STATUS_EVERY)
        took = time.perf_counter() - started
    finally:
        manager.stop(keep=True)  # its events are read below, then it goes
    lines = (manager.spool / "events.jsonl").read_bytes().splitlines()
    shutil.rmtree(manager.spool.parent, ignore_errors=True)
    runs = collections.Counter(e["id"] for e in map(orjson.loads, lines)
                               if e["to"] == "running" and not e["id"].startswith("warm-"))
    wrong = sum(1 for job in jobs if runs[str(job["id"])] != 1)
    print(f"{args.dependants} jobs after one, {args.workers} workers: all done {took:.1f} s after the drop "
          f"(the root waited 2 s); `pool status root --json` answered {len(answers)} times, slowest "
          f"{max(answers, default=0):.2f} s, failed {len(refusals)} times; jobs that ran other than once: {wrong} "
          "(target 0)")
    for refusal in refusals[:3]:
        print("  pool status said:", refusal.decode(errors="replace").strip())


if __name__ == "__main__":
    main()
