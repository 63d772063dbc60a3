"""Tasks the benchmarks run (served with ``--tasks bench_tasks``)."""

from __future__ import annotations

import time

import pool


@pool.task
def noop() -> None:
    return None


@pool.task
def forever() -> None:
    while True:
        time.sleep(0.01)


@pool.task
def burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def echo_value(value: object) -> object:
    """A plain function (no decorator): pool.Executor and ProcessPoolExecutor run it alike."""
    return value
