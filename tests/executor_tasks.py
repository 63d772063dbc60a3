"""Plain functions (no @pool.task) for pool.Executor's tests: a private manager runs any
function its owner can import."""

from __future__ import annotations

import os

from waiting import until_killed, wait_for_gate

import pool


class Odd(Exception):
    """An exception of the task's own module: made again in the caller."""

    def __init__(self, what: str, count: int) -> None:
        super().__init__(what, count)
        self.what, self.count = what, count


def square(x: int) -> int:
    return x * x


def where() -> dict[str, object]:
    return {"pid": os.getpid(), "job": os.environ.get("POOL_JOB_ID")}


def raise_builtin(message: str) -> None:
    raise KeyError(message)


def raise_odd(what: str, count: int) -> None:
    raise Odd(what, count)


def raise_local() -> None:
    class Local(Exception):
        pass

    raise Local("defined where no caller can find it")


def gated(gate: str, value: object = None) -> object:
    """Report a third done, then wait for the test's gate."""
    pool.progress(1, 3, message="a third")
    wait_for_gate(gate)
    return value


def started_then_gated(marker: str, gate: str) -> str:
    """Say it started (the marker file), then wait for the gate."""
    with open(marker, "a") as f:
        f.write(f"{os.environ['POOL_JOB_ID']}\n")
    wait_for_gate(gate)
    return os.environ["POOL_JOB_ID"]


def forever() -> None:
    until_killed()


def allocate(megabytes: int) -> int:
    """Touch ``megabytes`` MiB; returns how many bytes it held."""
    held = bytearray(megabytes * 1024 * 1024)
    for page in range(0, len(held), 4096):
        held[page] = 1
    return len(held)


def resumes(steps: int) -> list[int]:
    """Saves each step as its checkpoint, starting from the last one saved."""
    done = pool.resume() or []
    for step in range(len(done), steps):
        done = [*done, step]
        pool.checkpoint(done)
    return done
