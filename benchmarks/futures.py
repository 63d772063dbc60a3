"""pool.Executor against concurrent.futures.ProcessPoolExecutor, side by side, rounds
interleaved (issue 21).

    python benchmarks/futures.py [--rounds 3] [--jobs 2000] [--cpu-jobs 40] [--cpu-seconds 0.1]
                                 [--pending 1000] [--idle-seconds 10]

The figures are measured one after another, each in its own block of rounds (the two
peers in turn, the order alternating each round), CPU-bound first: a figure never runs
just after another figure's thousands of jobs. pool's file work leaves traces that slow
the next minutes' (on ext4 without a journal, a new inode costs more for every inode
deleted in the last minutes: benchmarks/README.md), so the CPU-bound batch is measured
again at the end, after the tiny submits, as its own figure, beside the first.

1. CPU-bound: ``--cpu-jobs`` jobs burning ``--cpu-seconds`` of CPU each, 2 workers, wall
   time from the first submit to the last result. Target: pool / ProcessPoolExecutor
   <= 1.05 in every round.
2. tiny submits: ``--jobs`` submits of a function that returns its argument, 2 workers,
   then every result awaited: time to submit them all, time until every result is in
   (both from the first submit), jobs/s. No target: the figure.
3. idle: 1 worker held by a job blocked on a gate (a FIFO nobody writes to: no CPU),
   ``--pending`` more futures submitted and pending; the CPU time of this process (every
   thread: pool's watcher, ProcessPoolExecutor's manager thread) over ``--idle-seconds``
   while the main thread sleeps, as a % of one core. Target: pool <= 1% in every round.
   The CPU of the executor's other processes (pool's private manager and its worker;
   ProcessPoolExecutor's workers) over the same window is shown beside it, not judged.
   Then the executor is shut down with cancel_futures=True and the gate opened.
4. CPU-bound again, after 1 to 3: the same figure, shown, not judged.

Each executor is started, and warmed with a job per worker, before its timer. Every
result is checked: a task whose future is missing (not done, an exception, cancelled
where it should have run) or wrong is counted as lost, for each peer and figure.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import errno
import os
import resource
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from futures_tasks import burn, hold, tiny
from harness import in_turn, wait_for
from idle import cpu_seconds, tree

import pool

POOL, PPE = "pool.Executor", "ProcessPoolExecutor"
CPU_TARGET = 1.05  # wall time pool / ProcessPoolExecutor, every round
IDLE_TARGET = 1.0  # % of one core, pool's caller, every round
SETTLE = 1.0  # seconds between everything pending and the idle window
RESULT_PATIENCE = 600.0  # seconds to wait for results before counting the rest as lost

Make = Callable[[int], concurrent.futures.Executor]
PEERS: dict[str, Make] = {
    POOL: lambda workers: pool.Executor(max_workers=workers),
    PPE: concurrent.futures.ProcessPoolExecutor,
}


def started(make: Make, workers: int) -> concurrent.futures.Executor:
    """An executor whose workers have each run a job: what is timed is serving, not starting."""
    executor = make(workers)
    assert list(executor.map(tiny, range(-workers, 0))) == list(range(-workers, 0))
    return executor


def lost(futures: list[concurrent.futures.Future[Any]], expected: list[Any], cancelled_ok: bool = False) -> int:
    """How many futures did not end with the result expected of them (``cancelled_ok``:
    a cancelled one is not lost)."""
    count = 0
    for future, want in zip(futures, expected, strict=True):
        if not future.done():
            count += 1
        elif future.cancelled():
            count += not cancelled_ok
        elif future.exception() is not None or future.result() != want:
            count += 1
    return count


# ---------------------------------------------------------------- 1. tiny submits
def tiny_submits(make: Make, jobs: int) -> dict[str, float]:
    executor = started(make, 2)
    try:
        cpu, begun = time.process_time(), time.perf_counter()
        futures = [executor.submit(tiny, n) for n in range(jobs)]
        submitted = time.perf_counter() - begun
        concurrent.futures.wait(futures, timeout=RESULT_PATIENCE)
        finished, cpu = time.perf_counter() - begun, time.process_time() - cpu
        return {"submit": submitted, "all": finished, "rate": jobs / finished, "cpu": cpu / jobs * 1e6,
                "lost": lost(futures, list(range(jobs)))}
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------- 2. CPU-bound
def cpu_bound(make: Make, jobs: int, seconds: float) -> dict[str, float]:
    executor = started(make, 2)
    try:
        begun = time.perf_counter()
        futures = [executor.submit(burn, seconds, n) for n in range(jobs)]
        concurrent.futures.wait(futures, timeout=RESULT_PATIENCE)
        wall = time.perf_counter() - begun
        return {"wall": wall, "efficiency": jobs * seconds / 2 / wall, "lost": lost(futures, list(range(jobs)))}
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------- 3. idle with futures pending
def others(executor: concurrent.futures.Executor) -> list[int]:
    """The executor's processes other than this one."""
    manager = getattr(executor, "manager", None)
    if manager is not None:
        return tree(manager.process.pid)
    return [pid for pid in tree(os.getpid()) if pid != os.getpid()]


def tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass
    return total


def all_heard(futures: list[concurrent.futures.Future[Any]]) -> bool:
    """Every pending JobFuture has heard its job's queued status (the manager took it in):
    nothing of the submission is left to come to this process. True for other futures."""
    return all(getattr(f, "status", True) is not None for f in futures)


def open_gate(gate: str, patience: float = 60.0) -> bool:
    """Open the FIFO for writing and close it: the job blocked reading it returns. False
    when no job has it open for reading within ``patience`` seconds."""
    deadline = time.monotonic() + patience
    while True:
        try:
            os.close(os.open(gate, os.O_WRONLY | os.O_NONBLOCK))
            return True
        except OSError as exc:  # ENXIO: no reader yet
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                return False
            time.sleep(0.01)


def idle_pending(make: Make, pending: int, seconds: float) -> dict[str, float]:
    folder = tempfile.mkdtemp(prefix="pool-bench-gate-")
    gate = os.path.join(folder, "gate")
    os.mkfifo(gate)
    executor = started(make, 1)
    shutdown: threading.Thread | None = None
    try:
        held = executor.submit(hold, gate, -1)
        wait_for(lambda: os.path.exists(gate + ".started"), timeout=60, tick=0.01)
        futures = [executor.submit(tiny, n) for n in range(pending)]
        wait_for(lambda: held.running() and all_heard(futures), timeout=RESULT_PATIENCE, tick=0.05)
        time.sleep(SETTLE)
        pids = others(executor)
        before_others = tree_cpu(pids)  # read outside the window: reading /proc costs this process
        before_use, before_cpu, begun = resource.getrusage(resource.RUSAGE_SELF), time.process_time(), \
            time.perf_counter()
        time.sleep(seconds)  # the window: this thread sleeps, nothing else is done here
        window = time.perf_counter() - begun
        cpu, use = time.process_time() - before_cpu, resource.getrusage(resource.RUSAGE_SELF)
        other_cpu = tree_cpu(pids) - before_others
        switches = use.ru_nvcsw - before_use.ru_nvcsw
        waiting = sum(1 for f in futures if not f.done() and not f.running())

        # Shut down, cancelling what is pending, then open the gate: shutdown(wait=True)
        # waits for the held job, so it runs in a thread of its own meanwhile.
        ending = time.perf_counter()
        shutdown = threading.Thread(target=executor.shutdown, kwargs={"wait": True, "cancel_futures": True})
        shutdown.start()
        wait_for(lambda: all(f.done() or f.running() for f in futures), timeout=60, tick=0.01)
        open_gate(gate)
        shutdown.join(RESULT_PATIENCE)
        ended = time.perf_counter() - ending
        return {"caller": cpu / window * 100, "others": other_cpu / window * 100, "switches": switches,
                "pending": waiting, "cancelled": sum(1 for f in futures if f.cancelled()),
                "ran": sum(1 for f in futures if f.done() and not f.cancelled()), "end": ended,
                "lost": lost([held, *futures], [-1, *range(pending)], cancelled_ok=True)}
    finally:
        if shutdown is None:  # it failed before its end: let the held job go, and the rest
            open_gate(gate, patience=5.0)
            executor.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- report
def spread(values: list[float], fmt: str) -> str:
    """The median, with min-max when there is more than one value."""
    median = format(statistics.median(values), fmt)
    if len(values) == 1:
        return median
    return f"{median} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def ratios(a: list[float], b: list[float]) -> list[float]:
    return [x / y if y else float("inf") for x, y in zip(a, b, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--cpu-jobs", type=int, default=40)
    parser.add_argument("--cpu-seconds", type=float, default=0.1)
    parser.add_argument("--pending", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    args = parser.parse_args()

    results: dict[str, dict[str, list[dict[str, float]]]] = {
        p: {"tiny": [], "cpu": [], "idle": [], "cpu-after": []} for p in PEERS}

    def cpu(figure: str, r: int, name: str) -> None:
        got = cpu_bound(PEERS[name], args.cpu_jobs, args.cpu_seconds)
        results[name][figure].append(got)
        print(f"round {r}: {args.cpu_jobs} x {args.cpu_seconds * 1000:g} ms CPU{' (after)' * (figure != 'cpu')}  "
              f"{name:<19} wall {got['wall']:7.3f} s  efficiency {got['efficiency']:.1%}  lost {got['lost']:.0f}",
              flush=True)

    def tiny(figure: str, r: int, name: str) -> None:
        got = tiny_submits(PEERS[name], args.jobs)
        results[name][figure].append(got)
        print(f"round {r}: {args.jobs} tiny submits  {name:<19} submit {got['submit']:7.3f} s  all in "
              f"{got['all']:7.3f} s  {got['rate']:7.0f} jobs/s  this process's CPU {got['cpu']:4.0f} us a job  "
              f"lost {got['lost']:.0f}", flush=True)

    def idle(figure: str, r: int, name: str) -> None:
        got = idle_pending(PEERS[name], args.pending, args.idle_seconds)
        results[name][figure].append(got)
        print(f"round {r}: idle, {args.pending} pending  {name:<19} caller {got['caller']:.3f}% of a core "
              f"({got['switches']:.0f} wakeups)  its other processes {got['others']:.3f}%  "
              f"{got['pending']:.0f} pending; shutdown: {got['cancelled']:.0f} cancelled, {got['ran']:.0f} ran, "
              f"ended in {got['end']:.2f} s  lost {got['lost']:.0f}", flush=True)

    for figure, measure in (("cpu", cpu), ("tiny", tiny), ("idle", idle), ("cpu-after", cpu)):
        for round_number in range(args.rounds):
            r = round_number + 1
            print(f"{figure}, round {r}: load average {os.getloadavg()[0]:.2f} (the machine is shared)", flush=True)
            for name in in_turn(PEERS, round_number):
                measure(figure, r, name)

    def of(peer: str, figure: str, key: str) -> list[float]:
        return [run[key] for run in results[peer][figure]]

    cpu_ratios = ratios(of(POOL, "cpu", "wall"), of(PPE, "cpu", "wall"))
    cpu_met = all(ratio <= CPU_TARGET for ratio in cpu_ratios)
    idle_met = all(value <= IDLE_TARGET for value in of(POOL, "idle", "caller"))
    rows = [
        (f"{args.jobs} tiny submits: submit all, s", "tiny", "submit", ".3f", ".2f", "", ""),
        (f"{args.jobs} tiny submits: all results in, s", "tiny", "all", ".3f", ".2f", "", ""),
        (f"{args.jobs} tiny submits: jobs/s", "tiny", "rate", ".0f", ".3f", "none", ""),
        (f"{args.jobs} tiny submits: CPU of this process, us a job", "tiny", "cpu", ".0f", ".2f", "", ""),
        (f"{args.cpu_jobs} x {args.cpu_seconds * 1000:g} ms CPU, 2 workers: wall, s", "cpu", "wall", ".3f", ".3f",
         f"<= {CPU_TARGET:g}", "yes" if cpu_met else "NO"),
        ("  the same, after the tiny submits and the idle rounds: wall, s", "cpu-after", "wall", ".3f", ".3f", "none",
         ""),
        (f"idle, {args.pending} pending, {args.idle_seconds:g} s: caller CPU, % of a core", "idle", "caller", ".3f",
         ".2f", f"pool <= {IDLE_TARGET:g}%", "yes" if idle_met else "NO"),
        ("  (its other processes over the window, %)", "idle", "others", ".3f", ".2f", "", ""),
        ("idle: shutdown(cancel_futures=True) + gate opened, s", "idle", "end", ".3f", ".1f", "", ""),
    ]
    print(f"\n{args.rounds} round(s), medians (min-max); ratio pool / ProcessPoolExecutor, round by round")
    header = ("figure", POOL, PPE, "ratio", "target", "met (every round)")
    table = [header]
    for label, figure, key, fmt, ratio_fmt, target, met in rows:
        ours, theirs = of(POOL, figure, key), of(PPE, figure, key)
        ratio = spread(ratios(ours, theirs), ratio_fmt) if all(theirs) else "-"
        table.append((label, spread(ours, fmt), spread(theirs, fmt), ratio, target, met))
    for figure, label in (("tiny", "tiny submits"), ("cpu", "CPU-bound"), ("idle", "idle (cancelled is not lost)"),
                          ("cpu-after", "CPU-bound, after")):
        table.append((f"lost tasks, {label} (all rounds)", f"{sum(of(POOL, figure, 'lost')):.0f}",
                      f"{sum(of(PPE, figure, 'lost')):.0f}", "", "0", "yes" if not sum(
                          of(POOL, figure, "lost")) + sum(of(PPE, figure, "lost")) else "NO"))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
