"""`pool status` and `pool status --json` (the whole process) over a spool of many jobs.

    python benchmarks/status_listing.py [--jobs 10000 100000] [--waiting | --queued] [--rounds 5]
                                        [--other PYTHON] [--cold]

The spool is filled with status documents written directly (no manager): finished jobs,
or with ``--waiting`` jobs waiting an hour for their time (issue 20's case), or with
``--queued`` jobs queued in records as a ``.jsonl``'s jobs are (pool/queuedbook.py: issue
23's million queued jobs), and finished
jobs get their lines in status/index.final as `pool serve` appends them (pool/finalindex.py);
then `pool status` (the table) and `pool status --json` run as a user would run them, in
rounds, their wall times reported with the median and the worst (a target is met only
when every round meets it), against `cat status/*.json` reading the same files. Each round
also runs them with the index moved away (every file read, as before the index).
``--other PYTHON``: the same commands run by the Python of another checkout's venv
(another version of pool), interleaved in each round, as a ratio. ``--cold`` (root only):
the kernel's page cache is dropped before each command, as after a reboot, or for a spool
whose files have long left memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pool import lifecycle
from pool.finalindex import NAME, FinalIndex
from pool.jobfile import parse_job
from pool.model import new_status, utc_now
from pool.queuedbook import RECORD
from pool.spool import SpoolDir


def fill(root: Path, jobs: int, waiting: bool = False) -> SpoolDir:
    spool = SpoolDir(root)
    spool.create()
    now = utc_now()
    for n in range(jobs):
        doc = {"task": "m:f", "id": f"j{n}", "args": [n], **({"delay": 3600} if waiting else {})}
        status = new_status(parse_job(doc, "bench", "bench"), now)
        spool.write_status(status if waiting else lifecycle.succeed(lifecycle.start(status, 1, 1, now), {"n": n}, now))
    index = FinalIndex(spool)  # what the manager appends as each job ends (or finds at start)
    for job_id in spool.status_ids():
        index.note(job_id)
    index.step(float("inf"), time.monotonic)
    index.close()
    return spool


def fill_queued(root: Path, jobs: int) -> SpoolDir:
    """Jobs queued in records, as the manager writes them when it takes in a ``.jsonl``
    whose jobs have no ids (the ids it makes, a record per RECORD lines)."""
    spool = SpoolDir(root)
    spool.create()
    now, token = utc_now(), secrets.token_hex(6)
    for first in range(0, jobs, RECORD):
        statuses = [new_status(parse_job({"task": "m:f", "id": f"{token}-{n + 1}", "args": [n]}, "bench", "bench"), now)
                    for n in range(first, min(jobs, first + RECORD))]
        name, content, mode = spool.queued.file(statuses)
        fd = os.open(spool.status_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(content)
    return spool


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timed(argv: list[str], cold: bool = False) -> tuple[float, float]:
    if cold:
        drop_caches()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, max(peak, before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, nargs="+", default=[10_000, 100_000])
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--waiting", action="store_true", help="Jobs waiting for their time, not finished ones.")
    kind.add_argument("--queued", action="store_true", help="Jobs queued in records, as a .jsonl's are.")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--other", help="The python of another checkout's venv, timed in the same rounds.")
    parser.add_argument("--cold", action="store_true", help="Drop the page cache before each command (root).")
    args = parser.parse_args()
    if args.cold:
        drop_caches()  # fails loudly where it is not allowed: a cold figure is never a warm one
    for jobs in args.jobs:
        with tempfile.TemporaryDirectory() as scratch:
            spool = fill_queued(Path(scratch) / "spool", jobs) if args.queued else \
                fill(Path(scratch) / "spool", jobs, args.waiting)
            index, away = spool.status_dir / NAME, Path(scratch) / NAME
            for view in (["status"], ["status", "--json"]):
                argv = ["-m", "pool", "--spool", str(spool.root), *view]
                ours, unindexed, theirs, memory = [], [], [], 0.0
                for _ in range(args.rounds):  # interleaved: the disk here swings within minutes
                    seconds, memory = timed([sys.executable, *argv], args.cold)
                    ours.append(seconds)
                    if index.exists():
                        index.rename(away)
                        unindexed.append(timed([sys.executable, *argv], args.cold)[0])
                        away.rename(index)
                    if args.other:
                        theirs.append(timed([args.other, *argv], args.cold)[0])
                kind = "waiting" if args.waiting else "queued" if args.queued else "finished"
                said = (f"{jobs:>7} {kind} jobs{' (cold)' if args.cold else ''}: "
                        f"pool {' '.join(view)} median {statistics.median(ours):.2f} s, worst {max(ours):.2f} s "
                        f"(peak RSS {memory:.0f} MB)")
                if unindexed:
                    said += (f"; without the index: median {statistics.median(unindexed):.2f} s, worst "
                             f"{max(unindexed):.2f} s")
                if theirs:
                    said += (f"; {args.other}: median {statistics.median(theirs):.2f} s, ratio "
                             f"{statistics.median(ours) / statistics.median(theirs):.2f}")
                print(said)
            cat, _ = timed(["sh", "-c", f"cd {spool.status_dir} && find . -name '*.json' | xargs cat"], args.cold)
            print(f"{jobs:>7} jobs: find | xargs cat of the same files {cat:.2f} s")


if __name__ == "__main__":
    main()
