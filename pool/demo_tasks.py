"""Example tasks for ``pool demo`` and the README: what a tasks module looks like."""

from __future__ import annotations

import os
import time

import pool


@pool.task
def render(frame: int, steps: int = 40, step_seconds: float = 0.1) -> dict[str, int]:
    """Pretend to render a frame, reporting progress as it goes."""
    for step in range(steps):
        time.sleep(step_seconds)
        pool.progress(step + 1, steps, message=f"frame {frame}: pass {step + 1}/{steps}")
    print(f"frame {frame} rendered")
    return {"frame": frame, "passes": steps}


@pool.task
def flaky(marker: str, seconds: float = 1.5) -> str:
    """Fails on its first attempt, succeeds on the next: shows a retry."""
    for step in range(10):
        time.sleep(seconds / 10)
        pool.progress(step + 1, 10)
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ConnectionError("the (pretend) network dropped; pool will retry")
    return "worked on the second try"


@pool.task
def doomed(seconds: float = 1.0) -> None:
    """Always fails: shows a failed job with its error and traceback."""
    time.sleep(seconds / 2)
    pool.progress(0.5, message="about to divide by zero")
    time.sleep(seconds / 2)
    print(1 / 0)


@pool.task
def endless(step_seconds: float = 0.2) -> None:
    """Runs until it is killed: shows `pool kill`."""
    step = 0
    while True:
        step += 1
        pool.progress(step % 100, 100, message=f"step {step}, waiting to be killed")
        time.sleep(step_seconds)


@pool.task
def resumable(steps: int = 30, step_seconds: float = 0.1) -> dict[str, int]:
    """Saves a checkpoint after every step, so an attempt after a crash goes on from
    there: the demo kills its worker (kill -9) partway through."""
    start = pool.resume() or 0
    resumed = f" (resumed at step {start})" if start else ""
    for step in range(start, steps):
        time.sleep(step_seconds)
        pool.checkpoint(step + 1)
        pool.progress(step + 1, steps, message=f"step {step + 1}/{steps}{resumed}")
    return {"steps": steps, "resumed_at": start}
