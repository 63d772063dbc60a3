"""Tasks the benchmarks run (served with ``--tasks bench_tasks``)."""

from __future__ import annotations

import os
import pickle
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


def _save_by_hand(path: str, state: object) -> None:
    """What a user writes without pool: pickle to a temp file, then replace the last one."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as out:
        pickle.dump(state, out)
    os.replace(tmp, path)


@pool.task
def checkpoint_costs(saves: int, size: int, by_hand_first: bool, by_hand_dir: str) -> dict[str, list[float]]:
    """``saves`` checkpoints of a ``size``-byte state through pool.checkpoint, each beside
    one saved by hand (benchmarks/checkpoint_cost.py), alternating, in this job's worker:
    the microseconds each took, per way."""
    state = {"step": 0, "data": "x" * size}
    path = os.path.join(by_hand_dir, "state.pickle")
    ways = [("by_hand", lambda: _save_by_hand(path, state)), ("pool", lambda: pool.checkpoint(state))]
    if not by_hand_first:
        ways.reverse()
    costs: dict[str, list[float]] = {name: [] for name, _ in ways}
    for step in range(saves):
        state["step"] = step
        for name, save in ways:
            started = time.perf_counter()
            save()
            costs[name].append((time.perf_counter() - started) * 1e6)
    assert pool.resume()["step"] == saves - 1
    return costs


@pool.task
def stamped_progress(steps: int, pause: float) -> None:
    """Reports each step with the wall-clock time it reported it in the message: the
    benchmark of scale-out measures how long the hub takes to show it."""
    for step in range(1, steps + 1):
        pool.progress(step, steps, message=repr(time.time()))
        time.sleep(pause)  # the job's work: a duration, not a wait for something


@pool.task
def pause(seconds: float) -> None:
    time.sleep(seconds)  # the job's work: a duration (scale-out's 8 jobs of 2 s)
