"""Tiny-job throughput against the peers a user would pick instead, interleaved in one run
on the same disk, each task a peer loses or fails counted (issue 23, target 1).

    python benchmarks/peers.py [--rounds 3] [--jobs 2000] [--settle 61] [--no-setup]

2,000 do-nothing jobs, 2 workers, timed from the first submit to the last result seen by
the submitter:

- pool: one ``.jsonl`` batch; a ``.json`` file per job dropped into ``incoming/``; one
  ``pool.Spool.submit()`` per job (how a Python caller submits); a ``.jsonl`` of ``true``
  command jobs (what task-spooler runs).
- Celery, prefork pool of 2, with a real redis-server as broker and result backend
  (celery_peer.py; Redis without persistence, its fastest).
- huey ``SqliteHuey``, 2 process workers (huey_peer.py).
- task-spooler (Debian's ``tsp``), 2 slots, one ``tsp true`` per job, as from a shell.
- ``ProcessPoolExecutor.submit``: in memory, nothing kept across a crash of the caller.

Every round runs every peer, in an order that turns round by round; the medians (min-max)
are reported with the ratio of pool's figures to the best peer that lost and failed
nothing in every round. A peer that is not installed is installed first (pip into this
interpreter; ``apt-get`` for redis-server and task-spooler, which needs root): never
skipped, never faked. ``--no-setup`` fails instead.

Before each run, what was written is written back (``sync``) and the script waits
``--settle`` seconds: on an ext4 with no journal (this machine's), the inode allocator
passes over each inode freed in the last minute (five while the block of the inode table
holding it is dirty), one at a time, for every file it creates, so a run that came soon
after one that removed files (pool's claims and replaced statuses, task-spooler's
outputs, a scratch folder) created each of its own up to 10x slower. Runs of pool paid for it, as they create a file a job; SQLite and Redis do not.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from harness import HERE, ScratchManager, in_turn, remove_scratch, scratch_folder, scratch_kept_to_the_end

PIP_PEERS = {"huey": "huey", "celery": "celery[redis]", "redis": "redis"}
APT_PEERS = {"redis-server": "redis-server", "tsp": "task-spooler"}


@dataclass
class Run:
    seconds: float
    lost: int = 0
    failed: int = 0


@dataclass
class Results:
    runs: list[Run] = field(default_factory=list)

    def rates(self, jobs: int) -> list[float]:
        return [jobs / run.seconds for run in self.runs]

    @property
    def reliable(self) -> bool:
        return all(run.lost == 0 and run.failed == 0 for run in self.runs)


def ensure_peers(setup: bool) -> None:
    missing_modules = [package for module, package in PIP_PEERS.items() if importlib.util.find_spec(module) is None]
    missing_programs = [package for program, package in APT_PEERS.items() if shutil.which(program) is None]
    if not (missing_modules or missing_programs):
        return
    if not setup:
        raise SystemExit(f"peers not installed: {', '.join(missing_modules + missing_programs)}")
    if missing_modules:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing_modules], check=True)
    if missing_programs:
        if os.geteuid() != 0:
            raise SystemExit(f"install as root first: apt-get install -y {' '.join(missing_programs)}")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing_programs], check=True, stdout=subprocess.DEVNULL)


def pool_run(jobs: int, submit: Callable[[ScratchManager], float]) -> Run:
    """pool serving 2 workers; ``submit`` puts the jobs in and returns when it began. Waits
    for every job to end (done or failed) or a file to be rejected (its jobs failed); a job
    that never ended in the time is lost."""
    manager = ScratchManager("--workers", "2", "--allow-commands")
    rejected = manager.spool / "rejected"

    def ended() -> int:
        return manager.count_events("done") + manager.count_events("failed")

    try:
        started = submit(manager)
        try:
            manager.block_until(lambda: ended() >= jobs or any(rejected.iterdir()), 120, f"{jobs} jobs ended")
        except TimeoutError:
            pass
        seconds = time.perf_counter() - started
        done, failed = manager.count_events("done"), manager.count_events("failed")
        return Run(seconds, lost=0 if any(rejected.iterdir()) else jobs - done - failed, failed=jobs - done)
    finally:
        manager.stop()


def pool_batch(jobs: int, job: dict[str, object]) -> Run:
    return pool_run(jobs, lambda manager: manager.drop_batch("batch.jsonl", [job] * jobs))


def pool_files(jobs: int) -> Run:
    def submit(manager: ScratchManager) -> float:
        started = time.perf_counter()
        for n in range(jobs):
            manager.drop(f"j{n}.json", {"task": "bench_tasks:noop", "id": f"j{n}"})
        return started
    return pool_run(jobs, submit)


def pool_client(jobs: int) -> Run:
    import pool

    def submit(manager: ScratchManager) -> float:
        spool = pool.Spool(manager.spool)
        started = time.perf_counter()
        for _ in range(jobs):
            spool.submit("bench_tasks:noop")
        return started
    return pool_run(jobs, submit)


def noop() -> None:
    return None


def executor(jobs: int) -> Run:
    with concurrent.futures.ProcessPoolExecutor(2) as workers:
        workers.submit(noop).result()  # the workers started first, as pool's are
        started = time.perf_counter()
        futures = [workers.submit(noop) for _ in range(jobs)]
        failed = sum(1 for future in futures if future.exception() is not None)
        return Run(time.perf_counter() - started, failed=failed)


def child_peer(script: str, *args: str) -> Callable[[int], Run]:
    """A peer run by a script of its own in a child process, which prints its Run as JSON
    (its own log lines go to a file: huey logs every race of its workers)."""
    def run(jobs: int) -> Run:
        with tempfile.TemporaryFile() as errors:
            out = subprocess.run([sys.executable, script, str(jobs), *args], stdout=subprocess.PIPE, stderr=errors,
                                 cwd=HERE, timeout=600, check=False)
            if out.returncode != 0:
                errors.seek(0)
                raise SystemExit(f"{script} failed: {errors.read()[-2000:].decode(errors='replace')}")
        return Run(**orjson.loads(out.stdout.splitlines()[-1]))
    return run


def task_spooler(jobs: int) -> Run:
    """task-spooler with 2 slots and a server of its own (TS_SOCKET), one ``tsp true`` per
    job, as a shell user queues them; its job list kept whole (TS_MAXFINISHED) to count."""
    folder = scratch_folder("tsp-bench-")
    env = dict(os.environ, TS_SOCKET=os.path.join(folder, "socket"), TS_MAXFINISHED=str(jobs + 10), TMPDIR=folder)

    def tsp(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tsp", *args], env=env, capture_output=True, text=True, timeout=600, check=False)

    tsp("-S", "2")
    tsp("-w", tsp("true").stdout.strip())  # the server started first, as pool's manager is
    failed = 0
    started = time.perf_counter()
    ids = []
    for _ in range(jobs):
        queued = tsp("true")
        if queued.returncode == 0:
            ids.append(queued.stdout.strip())
        else:
            failed += 1
    tsp("-w", ids[-1])
    states = {fields[0]: fields for fields in (line.split() for line in tsp("-l").stdout.splitlines()[1:])}
    for job_id in ids:  # the last one queued ended; one started before it may still run
        if states.get(job_id, ["", ""])[1] != "finished":
            tsp("-w", job_id)
    seconds = time.perf_counter() - started
    states = {fields[0]: fields for fields in (line.split() for line in tsp("-l").stdout.splitlines()[1:])}
    lost = sum(1 for job_id in ids if states.get(job_id, ["", ""])[1] != "finished")
    failed += sum(1 for job_id in ids if job_id in states and states[job_id][1] == "finished"
                  and states[job_id][3] != "0")
    tsp("-K")
    remove_scratch(folder)
    return Run(seconds, lost=lost, failed=failed)


NOOP_TASK = {"task": "bench_tasks:noop"}
PEERS: dict[str, Callable[[int], Run]] = {
    "pool, one .jsonl batch": lambda jobs: pool_batch(jobs, NOOP_TASK),
    "pool, a .json file per job": pool_files,
    "pool, Spool.submit() per job": pool_client,
    "pool, one .jsonl of `true` commands": lambda jobs: pool_batch(jobs, {"command": ["true"]}),
    "Celery prefork + Redis, delay() per job": child_peer("celery_peer.py"),
    "huey SqliteHuey, process workers": child_peer("huey_peer.py", "sqlite"),
    "task-spooler, `tsp true` per job": task_spooler,
    "ProcessPoolExecutor.submit (in memory)": executor,
}
IN_MEMORY = {"ProcessPoolExecutor.submit (in memory)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--settle", type=float, default=61.0,
                        help="seconds to wait before each run, for the inodes freed before it to be reused freely")
    parser.add_argument("--no-setup", action="store_true", help="fail if a peer is not installed")
    args = parser.parse_args()
    ensure_peers(not args.no_setup)
    results = {name: Results() for name in PEERS}
    with scratch_kept_to_the_end():  # no peer pays for the removal of another's files
        for round_number in range(args.rounds):
            for name in in_turn(PEERS, round_number):
                os.sync()  # and none for the writeback of what the one before wrote, or its removals
                time.sleep(args.settle)
                run = PEERS[name](args.jobs)
                results[name].runs.append(run)
                print(f"round {round_number + 1}: {name}: {args.jobs / run.seconds:,.0f} jobs/s, lost {run.lost}, "
                      f"failed {run.failed}", flush=True)
    print(f"\n{args.jobs} no-op jobs, 2 workers, medians of {args.rounds} interleaved rounds (min-max)")
    for name, result in results.items():
        rates = result.rates(args.jobs)
        lost, failed = sum(r.lost for r in result.runs), sum(r.failed for r in result.runs)
        print(f"{name:<42} {statistics.median(rates):8,.0f} jobs/s ({min(rates):,.0f}-{max(rates):,.0f})  "
              f"lost {lost}, failed {failed}")
    persisted = {name: statistics.median(r.rates(args.jobs)) for name, r in results.items()
                 if r.reliable and not name.startswith("pool") and name not in IN_MEMORY}
    if not persisted:
        print("\nno peer that keeps its tasks lost and failed nothing")
        return
    best = max(persisted, key=lambda name: persisted[name])
    print(f"\nbest peer that keeps its tasks and lost and failed nothing: {best}")
    for name in (n for n in PEERS if n.startswith("pool")):
        mine, theirs = results[name].rates(args.jobs), results[best].rates(args.jobs)
        ratios = [a / b for a, b in zip(mine, theirs, strict=True)]
        met = "met" if all(ratio >= 2 for ratio in ratios) else "not met"
        print(f"{name:<42} / best: median {statistics.median(ratios):.2f} "
              f"(rounds {', '.join(f'{r:.2f}' for r in ratios)})  target >= 2 every round: {met}")


if __name__ == "__main__":
    main()
