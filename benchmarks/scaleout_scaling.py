"""The hub as machines are added (issue 25, "past two machines"): 1, 2, 4 and 8 `pool worker`
processes on this machine, each standing for a machine of ``--slots`` slots, one hub, one
redis-server.

    python scaleout_scaling.py [--workers 1 2 4 8] [--slots 1] [--jobs 1000] [--rounds 2]

For each number of workers, in an order turned round every other round:
1. tiny jobs: ``--jobs`` no-op jobs in one `.jsonl` at the hub, timed to the last `done`;
   the hub's CPU seconds over them (its process, every thread), and the whole machine's
   CPU share meanwhile (on a machine with fewer cores than workers, it is the machine that
   saturates first, not the hub: the hub's CPU per job is what tells where it would);
2. progress: one job a slot reporting progress for 3 s (a runner sends at most one report
   every 0.2 s); the reports the hub wrote a second (counted in the broker: each word on
   an attempt's stream is an XADD there) and the hub's CPU share meanwhile.
Nothing polls the hub beside what is measured: the waits block on inotify (harness).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import redis
from celery_peer import start_redis
from harness import ScratchManager, in_turn
from idle import cpu_seconds
from scaleout import pool_workers, stop_all

REPORTING_SECONDS = 3.0


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine so far, in clock ticks."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def xadds(db: redis.Redis) -> int:
    stats: dict[str, dict[str, int]] = db.info("commandstats")  # type: ignore[assignment]
    return int(stats.get("cmdstat_xadd", {}).get("calls", 0))


def measure(url: str, folder: str, workers: int, slots: int, jobs: int, tag: str) -> dict[str, float]:
    db = redis.Redis.from_url(url)
    procs = pool_workers(url, folder, workers, slots, prefix=f"{tag}-m")
    hub = None
    try:
        deadline = time.monotonic() + 120
        while len(list(db.scan_iter("pool:worker:*"))) < workers:  # each announced: ready
            if time.monotonic() > deadline:
                raise SystemExit("the workers did not announce themselves")
            time.sleep(0.05)
        hub = ScratchManager("--engine", "celery", "--broker", url, "--allow-commands")
        pid = hub.proc.pid
        hub_before, (busy_before, total_before) = cpu_seconds(pid), machine_busy()
        started = hub.drop_batch(f"{tag}.jsonl", [{"task": "bench_tasks:noop", "id": f"{tag}-{n}"}
                                                  for n in range(jobs)])
        hub.wait_events("done", jobs)
        seconds = time.perf_counter() - started
        hub_cpu = cpu_seconds(pid) - hub_before
        busy_after, total_after = machine_busy()
        reporters = workers * slots
        hub_before, said_before = cpu_seconds(pid), xadds(db)
        started = time.perf_counter()
        hub.drop_batch(f"{tag}-p.jsonl", [{"task": "bench_tasks:stamped_progress", "args": [1000,
                                           REPORTING_SECONDS / 1000]} for _ in range(reporters)])
        hub.wait_events("done", jobs + reporters)
        reporting = time.perf_counter() - started
        # Two XADDs a word (its stream and the wake stream); of a job's words, all but
        # Started, Ran and its exit are progress reports.
        reports = (xadds(db) - said_before) / 2 - 3 * reporters
        return {"jobs/s": jobs / seconds, "hub ms/job": hub_cpu / jobs * 1000,
                "hub cpu %": hub_cpu / seconds * 100,
                "machine cpu %": (busy_after - busy_before) / (total_after - total_before) * 100,
                "reports/s": reports / reporting,
                "hub cpu % reporting": (cpu_seconds(pid) - hub_before) / reporting * 100}
    finally:
        if hub is not None:
            hub.stop()
        stop_all(procs)
        for key in db.scan_iter("pool:worker:*"):
            db.delete(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="pool-scaleout-scaling-")
    server, url = start_redis(folder)
    results: dict[int, list[dict[str, float]]] = {n: [] for n in args.workers}
    try:
        for round_number in range(args.rounds):
            for workers in in_turn(args.workers, round_number):
                found = measure(url, folder, workers, args.slots, args.jobs, f"r{round_number}w{workers}")
                results[workers].append(found)
                print(f"round {round_number + 1}, {workers} workers of {args.slots} slots: " +
                      ", ".join(f"{key} {value:.1f}" for key, value in found.items()), flush=True)
    finally:
        server.terminate()
        server.wait(30)
    print(f"\nmedians of {args.rounds} rounds ({args.jobs} tiny jobs; {os.cpu_count()} cores here)")
    keys = list(next(iter(results.values()))[0])
    print(f"{'workers':<8}" + "".join(f"{key:>20}" for key in keys))
    for workers, rows in results.items():
        print(f"{workers:<8}" + "".join(f"{statistics.median(r[key] for r in rows):20.1f}" for key in keys))


if __name__ == "__main__":
    main()
