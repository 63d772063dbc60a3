"""`pool status` and `pool status --json` (the whole process) over a spool of many jobs.

    python benchmarks/status_listing.py [--jobs 10000 100000] [--waiting] [--rounds 5] [--other PYTHON]

The spool is filled with status documents written directly (no manager): finished jobs,
or with ``--waiting`` jobs waiting an hour for their time (issue 20's case); then `pool
status` (the table) and `pool status --json` run as a user would run them, in rounds,
their wall times reported with the median and the worst (a target is met only when every
round meets it), against `cat status/*.json` reading the same files. ``--other PYTHON``:
the same commands run by the Python of another checkout's venv (another version of pool),
interleaved in each round, as a ratio.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pool import lifecycle
from pool.jobfile import parse_job
from pool.model import new_status, utc_now
from pool.spool import SpoolDir


def fill(root: Path, jobs: int, waiting: bool = False) -> SpoolDir:
    spool = SpoolDir(root)
    spool.create()
    now = utc_now()
    for n in range(jobs):
        doc = {"task": "m:f", "id": f"j{n}", "args": [n], **({"delay": 3600} if waiting else {})}
        status = new_status(parse_job(doc, "bench", "bench"), now)
        spool.write_status(status if waiting else lifecycle.succeed(lifecycle.start(status, 1, 1, now), {"n": n}, now))
    return spool


def timed(argv: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, max(peak, before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--waiting", action="store_true", help="Jobs waiting for their time, not finished ones.")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--other", help="The python of another checkout's venv, timed in the same rounds.")
    args = parser.parse_args()
    for jobs in args.jobs:
        with tempfile.TemporaryDirectory() as scratch:
            spool = fill(Path(scratch) / "spool", jobs, args.waiting)
            for view in (["status"], ["status", "--json"]):
                argv = ["-m", "pool", "--spool", str(spool.root), *view]
                ours, theirs, memory = [], [], 0.0
                for _ in range(args.rounds):  # interleaved: the disk here swings within minutes
                    seconds, memory = timed([sys.executable, *argv])
                    ours.append(seconds)
                    if args.other:
                        theirs.append(timed([args.other, *argv])[0])
                said = (f"{jobs:>7} {'waiting' if args.waiting else 'finished'} jobs: pool {' '.join(view)} median "
                        f"{statistics.median(ours):.2f} s, worst {max(ours):.2f} s (peak RSS {memory:.0f} MB)")
                if theirs:
                    said += (f"; {args.other}: median {statistics.median(theirs):.2f} s, ratio "
                             f"{statistics.median(ours) / statistics.median(theirs):.2f}")
                print(said)
            cat, _ = timed(["sh", "-c", f"cd {spool.status_dir} && find . -name '*.json' | xargs cat"])
            print(f"{jobs:>7} jobs: find | xargs cat of the same files {cat:.2f} s")


if __name__ == "__main__":
    main()
