"""Event-loop lag while 1,000 jobs are awaited from asyncio (issue 21): pool.aio against
a ProcessPoolExecutor awaited with asyncio.wrap_future, rounds interleaved.

    python benchmarks/aio_lag.py [--jobs 1000] [--rounds 3]

A ticker coroutine asks to wake every 5 ms and records how late each wake is (the lag:
how long the loop was blocked by something else) while ``--jobs`` tiny jobs are submitted
and every result awaited. The loop's lag with nothing else to do is measured first, as
the floor. pool's jobs run on a private manager with 2 workers (a pool.Executor's, its
futures unused): pool.aio submits them (the file writes off the loop), awaits them
through the process's one watcher, and checks every result; so does the peer. A result
missing or wrong is counted as lost.

Target (ours): p99 lag while awaiting 1,000 jobs <= 5 ms in every round, max <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import statistics
import time
from collections.abc import Awaitable, Callable

from bench_tasks import echo_value
from harness import in_turn, percentile

import pool
import pool.aio

TICK = 0.005


async def lag_while(work: Callable[[], Awaitable[int]]) -> tuple[list[float], int, float]:
    """(each tick's lag in ms, results lost, seconds the work took)."""
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            asked = time.perf_counter()
            await asyncio.sleep(TICK)
            lags.append((time.perf_counter() - asked - TICK) * 1000)

    ticking = asyncio.create_task(ticker())
    started = time.perf_counter()
    lost = await work()
    took = time.perf_counter() - started
    done.set()
    await ticking
    return lags, lost, took


def pool_round(jobs: int) -> tuple[list[float], int, float]:
    with pool.Executor(max_workers=2) as ex:  # its private manager serves the spool
        ex.submit(echo_value, 0).result()  # warmed
        spool = pool.aio.Spool(ex.spool.path)

        async def work() -> int:
            submitted = [await spool.submit("bench_tasks:echo_value", n) for n in range(jobs)]
            results = await asyncio.gather(*(job.result() for job in submitted), return_exceptions=True)
            return sum(1 for n, r in enumerate(results) if r != n)

        return asyncio.run(lag_while(work))


def executor_round(jobs: int) -> tuple[list[float], int, float]:
    with concurrent.futures.ProcessPoolExecutor(2) as ex:
        list(ex.map(echo_value, [0, 0]))  # workers started first

        async def work() -> int:
            futures = [asyncio.wrap_future(ex.submit(echo_value, n)) for n in range(jobs)]
            results = await asyncio.gather(*futures, return_exceptions=True)
            return sum(1 for n, r in enumerate(results) if r != n)

        return asyncio.run(lag_while(work))


def idle_round(seconds: float) -> tuple[list[float], int, float]:
    async def work() -> int:
        await asyncio.sleep(seconds)
        return 0

    return asyncio.run(lag_while(work))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    peers: dict[str, Callable[[], tuple[list[float], int, float]]] = {
        "pool.aio": lambda: pool_round(args.jobs), "ProcessPoolExecutor": lambda: executor_round(args.jobs),
        "idle loop": lambda: idle_round(2.0)}
    figures: dict[str, list[tuple[float, float, float, int, float]]] = {name: [] for name in peers}
    for round_number in range(args.rounds):
        for name in in_turn(peers, round_number):
            lags, lost, took = peers[name]()
            figure = (statistics.median(lags), percentile(lags, 99), max(lags), lost, took)
            figures[name].append(figure)
            print(f"round {round_number + 1} {name:20} lag p50 {figure[0]:.2f} ms, p99 {figure[1]:.2f} ms, "
                  f"max {figure[2]:.2f} ms over {len(lags)} ticks; {lost} lost; {took:.2f} s", flush=True)
    print()
    print("| peer | lag p50 (median of rounds) | p99 (worst round) | max (worst round) | lost | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, rows in figures.items():
        print(f"| {name} | {statistics.median(r[0] for r in rows):.2f} ms | {max(r[1] for r in rows):.2f} ms | "
              f"{max(r[2] for r in rows):.2f} ms | {sum(r[3] for r in rows)} | "
              f"{statistics.median(r[4] for r in rows):.2f} |")
    met = all(r[1] <= 5 and r[2] <= 50 and r[3] == 0 for r in figures["pool.aio"])
    print("\ntarget (pool.aio: p99 <= 5 ms and max <= 50 ms in every round, nothing lost): "
          + ("met" if met else "NOT met"))


if __name__ == "__main__":
    main()
