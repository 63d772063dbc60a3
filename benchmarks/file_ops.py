"""System calls per job: what one tiny job costs the machine, counted, not timed.

    python benchmarks/file_ops.py [--jobs 2000] [--other /path/to/other/checkout]

The manager and every process it starts run under ``strace -f -c`` while a batch of N
do-nothing jobs (one ``.jsonl``) is taken in and run; the counts, divided by N, do not
swing with the disk as times do. With ``--other``, another version of pool is counted
the same way, side by side (see versions.py for how it is run).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from harness import ScratchManager, wait_for
from versions import command_of

FILE_CALLS = ("openat", "close", "read", "write", "pwrite64", "newfstatat", "fstat", "rename", "renameat",
              "unlink", "unlinkat", "getdents64", "fcntl", "flock", "ftruncate")


def count(pool: tuple[str, ...] | None, source: Path | None, jobs: int) -> dict[str, float]:
    out = Path(tempfile.mkdtemp(prefix="pool-strace-")) / "counts"
    command = pool or (sys.executable, "-m", "pool")
    traced = ("strace", "-f", "-c", "-o", str(out), *command)
    manager = ScratchManager("--workers", "2", pool=traced, source=source)
    try:
        manager.drop_batch("batch.jsonl", [{"task": "bench_tasks:noop"}] * jobs)
        wait_for(lambda: manager.count_events("done") >= jobs, timeout=600, tick=0.01)
    finally:
        manager.stop()
    counts: dict[str, float] = {}
    for line in out.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[-1] in FILE_CALLS + ("futex", "poll", "ppoll", "total"):
            counts[fields[-1]] = int(fields[3]) / jobs
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--other", type=Path)
    args = parser.parse_args()
    assert shutil.which("strace"), "strace is needed (apt-get install strace)"
    versions = {"this": ((sys.executable, "-m", "pool"), None)}
    if args.other:
        versions["other"] = (command_of(args.other), args.other)
    results = {name: count(pool, source, args.jobs) for name, (pool, source) in versions.items()}
    calls = sorted({c for r in results.values() for c in r if c != "total"})
    print(f"system calls per job ({args.jobs} tiny jobs, one .jsonl, 2 workers; manager, forkserver, workers)")
    print(f"{'call':<12}" + "".join(f"{name:>10}" for name in results))
    for call in calls + ["total"]:
        print(f"{call:<12}" + "".join(f"{r.get(call, 0):10.1f}" for r in results.values()))
    file_ops = {name: sum(v for k, v in r.items() if k in FILE_CALLS) for name, r in results.items()}
    print(f"{'file ops':<12}" + "".join(f"{v:10.1f}" for v in file_ops.values()))


if __name__ == "__main__":
    main()
