"""System calls per job: what one tiny job costs the machine, counted, not timed.

    python benchmarks/file_ops.py [--jobs 2000] [--other /path/to/other/checkout] [--durable]

The manager and every process it starts run under ``strace -f -c`` while a batch of N
do-nothing jobs (one ``.jsonl``) is taken in and run; the counts, divided by N, do not
swing with the disk as times do. A second run, traced call by call, counts the file
operations issue 23 names, by kind: creating opens (O_CREAT), renames, unlinks (and
rmdirs), mkdirs and fsyncs, each that succeeded. With ``--other``, another version of
pool is counted the same way, side by side (see versions.py for how it is run); with
``--durable``, this checkout's ``pool serve --durable`` beside its default.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from harness import ScratchManager
from versions import command_of

FILE_CALLS = ("openat", "close", "read", "write", "pwrite64", "newfstatat", "fstat", "rename", "renameat",
              "unlink", "unlinkat", "getdents64", "fcntl", "flock", "ftruncate")


KINDS = ("creating opens", "renames", "unlinks", "mkdirs", "fsyncs")
TRACED = "openat,open,creat,rename,renameat,renameat2,unlink,unlinkat,rmdir,mkdir,mkdirat,fsync,fdatasync"


def run_traced(strace: tuple[str, ...], pool: tuple[str, ...] | None, source: Path | None, jobs: int,
               serve_args: tuple[str, ...]) -> None:
    command = pool or (sys.executable, "-m", "pool")
    manager = ScratchManager("--workers", "2", *serve_args, pool=(*strace, *command), source=source)
    try:
        manager.drop_batch("batch.jsonl", [{"task": "bench_tasks:noop"}] * jobs)
        manager.wait_events("done", jobs)
    finally:
        manager.stop()


def whole_calls(lines: list[str]) -> list[str]:
    """The lines of ``strace -f``, a call split across two (``<unfinished ...>``, then
    ``<... call resumed>``, when another process's call came between) joined into one."""
    unfinished: dict[str, str] = {}
    calls = []
    for line in lines:
        pid, _, rest = line.partition(" ")
        rest = rest.lstrip()
        if rest.endswith("<unfinished ...>"):
            unfinished[pid] = rest.removesuffix("<unfinished ...>")
        elif rest.startswith("<... "):
            calls.append(unfinished.pop(pid, "") + rest.split("resumed>", 1)[-1])
        else:
            calls.append(rest)
    return calls


def kind_of(line: str) -> str | None:
    """The kind of file operation a call (one whole line) that succeeded is, if it is one."""
    call = line.split("(", 1)[0].strip() if "(" in line else ""
    if not call or " = -1 " in line:
        return None
    if call in ("openat", "open"):
        return "creating opens" if "O_CREAT" in line else None
    if call == "creat":
        return "creating opens"
    if call.startswith("rename"):
        return "renames"
    if call in ("unlink", "unlinkat", "rmdir"):
        return "unlinks"
    if call.startswith("mkdir"):
        return "mkdirs"
    if call in ("fsync", "fdatasync"):
        return "fsyncs"
    return None


def count_kinds(pool: tuple[str, ...] | None, source: Path | None, jobs: int,
                serve_args: tuple[str, ...]) -> dict[str, float]:
    """File operations per job, by kind, from a trace call by call."""
    out = Path(tempfile.mkdtemp(prefix="pool-strace-")) / "calls"
    run_traced(("strace", "-f", "-qq", "-e", f"trace={TRACED}", "-o", str(out)), pool, source, jobs, serve_args)
    kinds = dict.fromkeys(KINDS, 0.0)
    for line in whole_calls(out.read_text(errors="replace").splitlines()):
        kind = kind_of(line)
        if kind is not None:
            kinds[kind] += 1 / jobs
    return kinds


def count(pool: tuple[str, ...] | None, source: Path | None, jobs: int, serve_args: tuple[str, ...]) -> \
        dict[str, float]:
    out = Path(tempfile.mkdtemp(prefix="pool-strace-")) / "counts"
    run_traced(("strace", "-f", "-c", "-o", str(out)), pool, source, jobs, serve_args)
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
    parser.add_argument("--durable", action="store_true", help="count pool serve --durable beside the default")
    args = parser.parse_args()
    assert shutil.which("strace"), "strace is needed (apt-get install strace)"
    this = (sys.executable, "-m", "pool")
    versions: dict[str, tuple[tuple[str, ...], Path | None, tuple[str, ...]]] = {"this": (this, None, ())}
    if args.other:
        versions["other"] = (command_of(args.other), args.other, ())
    if args.durable:
        versions["durable"] = (this, None, ("--durable",))
    results = {name: count(pool, source, args.jobs, extra) for name, (pool, source, extra) in versions.items()}
    calls = sorted({c for r in results.values() for c in r if c != "total"})
    print(f"system calls per job ({args.jobs} tiny jobs, one .jsonl, 2 workers; manager, forkserver, workers)")
    print(f"{'call':<12}" + "".join(f"{name:>10}" for name in results))
    for call in calls + ["total"]:
        print(f"{call:<12}" + "".join(f"{r.get(call, 0):10.1f}" for r in results.values()))
    file_ops = {name: sum(v for k, v in r.items() if k in FILE_CALLS) for name, r in results.items()}
    print(f"{'file ops':<12}" + "".join(f"{v:10.1f}" for v in file_ops.values()))
    kinds = {name: count_kinds(pool, source, args.jobs, extra) for name, (pool, source, extra) in versions.items()}
    print(f"\nfile operations per job, by kind (issue 23: creating opens, renames, unlinks, mkdirs, fsyncs)")
    print(f"{'kind':<16}" + "".join(f"{name:>10}" for name in kinds))
    for kind in KINDS:
        print(f"{kind:<16}" + "".join(f"{k[kind]:10.2f}" for k in kinds.values()))
    print(f"{'all of them':<16}" + "".join(f"{sum(k.values()):10.2f}" for k in kinds.values()))


if __name__ == "__main__":
    main()
