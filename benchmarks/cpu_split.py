"""Where the CPU of tiny jobs goes: the CPU seconds of the manager, of each of its workers
and of the writer of the jobs, over one run.

    python benchmarks/cpu_split.py [--jobs 2000] [--files]

2 workers; the jobs in one ``.jsonl`` or, with ``--files``, a ``.json`` file each. The
process that bounds throughput is the one whose CPU seconds come near the wall time.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import time
from pathlib import Path

from harness import ScratchManager

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def tree(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout.split()
    return [pid, *(p for child in children for p in tree(int(child)))]


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--files", action="store_true", help="a .json file per job, not one .jsonl")
    args = parser.parse_args()
    manager = ScratchManager("--workers", "2")
    try:
        pids = tree(manager.proc.pid)
        names = {pid: Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:70] for pid in pids}
        before, writer_before = {pid: cpu_seconds(pid) for pid in pids}, own_cpu()
        started = time.perf_counter()
        if args.files:
            for n in range(args.jobs):
                manager.drop(f"j{n}.json", {"task": "bench_tasks:noop", "id": f"j{n}"})
        else:
            manager.drop_batch("batch.jsonl", [{"task": "bench_tasks:noop"}] * args.jobs)
        manager.wait_events("done", args.jobs)
        wall = time.perf_counter() - started
        print(f"{args.jobs} jobs, {'a file each' if args.files else 'one .jsonl'}: {args.jobs / wall:,.0f} jobs/s, "
              f"{wall:.2f} s wall")
        for pid in pids:
            print(f"  {cpu_seconds(pid) - before[pid]:6.2f} s CPU  {names[pid]}")
        print(f"  {own_cpu() - writer_before:6.2f} s CPU  the writer of the jobs (this process)")
    finally:
        manager.stop()


if __name__ == "__main__":
    main()
