"""An idle manager: CPU used and memory held while there is nothing to do, or nothing
to do yet (``--waiting N``: N jobs waiting, an hour from their time; then `pool status`
over them, as a whole process, is timed too).

    python benchmarks/idle.py [--seconds 60] [--waiting 10000]

Counts the manager, its forkserver and its workers (everything in its process tree).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from harness import HERE, ScratchManager, wait_for

TICKS = os.sysconf("SC_CLK_TCK")


def tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--waiting", type=int, default=0)
    args = parser.parse_args()
    manager = ScratchManager("--workers", "2")
    try:
        if args.waiting:
            manager.drop_batch("later.jsonl", [{"task": "bench_tasks:noop", "delay": "1h"}] * args.waiting)
            wait_for(lambda: manager.count_events("waiting") >= args.waiting, timeout=600, tick=0.05)
        time.sleep(1)  # the warm-up jobs' aftermath
        pids = tree(manager.proc.pid)
        before = {pid: cpu_seconds(pid) for pid in pids}
        time.sleep(args.seconds)
        each = {pid: cpu_seconds(pid) - before[pid] for pid in pids}
        used = sum(each.values())
        for pid, seconds in each.items():
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                name = f.read().replace(b"\0", b" ").decode(errors="replace")[:70]
            print(f"  pid {pid:>7} {seconds:6.3f} CPU s  {name}")
        print(f"idle {args.seconds:g} s: {used:.3f} CPU s in {len(pids)} processes = "
              f"{used / args.seconds:.2%} of one core (target <= 0.5%)")
        print(f"manager RSS {rss_mb(manager.proc.pid):.1f} MB (target <= 60 MB); "
              f"whole tree {sum(rss_mb(p) for p in pids):.1f} MB")
        if args.waiting:
            for view in (["status"], ["status", "--json"], ["status", "--state", "waiting", "--limit", "20"]):
                print(f"pool {' '.join(view)} over {args.waiting} waiting jobs: median of 3 "
                      f"{statistics.median(status_seconds(manager, view) for _ in range(3)):.2f} s (target <= 0.5 s)")
    finally:
        manager.stop()


def status_seconds(manager: ScratchManager, view: list[str]) -> float:
    """One whole `pool status` process, start to exit, its output thrown away."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pool", "--spool", str(manager.spool), *view], check=True,
                   stdout=subprocess.DEVNULL, cwd=str(HERE))
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
