"""Tasks benchmarks/futures.py runs, both through pool.Executor (by name, JSON in and out)
and through ProcessPoolExecutor (pickled by reference): each returns what tells the caller
it ran with the right arguments, so a lost or mixed-up task is counted."""

from __future__ import annotations

import os
import time


def tiny(n: int) -> int:
    """Nothing to do: returns its argument."""
    return n


def burn(seconds: float, n: int) -> int:
    """Burns ``seconds`` of CPU (as bench_tasks.burn), then returns ``n``."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return n


def hold(gate: str, n: int) -> int:
    """Holds its worker until the gate opens, using no CPU while it waits: says it began
    (``gate``.started appears), then blocks opening the FIFO ``gate`` for reading until
    someone opens it for writing; returns ``n``."""
    with open(gate + ".started", "wb"):
        pass
    fd = os.open(gate, os.O_RDONLY)
    try:
        while os.read(fd, 4096):
            pass
    finally:
        os.close(fd)
    return n
