"""`pool status --json` (the whole process) over a spool of many jobs.

    python benchmarks/status_listing.py [--jobs 10000 100000]

The spool is filled with finished jobs' status documents written directly (no manager),
then `pool status --json` runs as a user would run it; its wall time and peak memory
are reported, against `cat status/*.json` reading the same files.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pool import lifecycle
from pool.jobfile import parse_job
from pool.model import new_status, utc_now
from pool.spool import SpoolDir


def fill(root: Path, jobs: int) -> SpoolDir:
    spool = SpoolDir(root)
    spool.create()
    now = utc_now()
    for n in range(jobs):
        status = new_status(parse_job({"task": "m:f", "id": f"j{n}", "args": [n]}, "bench", "bench"), now)
        spool.write_status(lifecycle.succeed(lifecycle.start(status, 1, 1, now), {"n": n}, now))
    return spool


def timed(argv: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, max(peak, before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    for jobs in args.jobs:
        with tempfile.TemporaryDirectory() as scratch:
            spool = fill(Path(scratch) / "spool", jobs)
            ours, memory = timed([sys.executable, "-m", "pool", "--spool", str(spool.root), "status", "--json"])
            cat, _ = timed(["sh", "-c", f"cd {spool.status_dir} && find . -name '*.json' | xargs cat"])
            print(f"{jobs:>7} jobs: pool status --json {ours:.2f} s (peak RSS {memory:.0f} MB); "
                  f"find | xargs cat of the same files {cat:.2f} s")


if __name__ == "__main__":
    main()
