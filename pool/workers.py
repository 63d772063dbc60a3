"""The manager's worker processes: started, signalled, replaced, stopped.

Workers are long-lived ``multiprocessing`` processes of the forkserver context (never a
fork of the manager, which runs watchdog threads), each the leader of its own process
group, running one job at a time. A signal goes to the whole group, so it reaches the
job's children and no other job; the reason is recorded on the slot before the signal
is sent, so the manager never mistakes a kill for a crash.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from .model import JobStatus
from .procs import signal_group
from .worker import WorkerConfig, worker_main

CANCEL, TIMEOUT, SHUTDOWN = "cancel", "timeout", "shutdown"
STOP_WAIT = 5.0  # seconds idle workers get to exit once their pipe is closed


@dataclass
class Slot:
    """One worker process and what the manager knows it is doing."""

    process: Any  # multiprocessing.Process of the forkserver context
    conn: Connection
    job: JobStatus | None = None
    next: JobStatus | None = None  # sent ahead, to start the moment `job` ends
    timeout_at: float | None = None
    stopping: str | None = None  # CANCEL | TIMEOUT | SHUTDOWN: why we signalled it
    kill_at: float | None = None  # when SIGTERM turns into SIGKILL

    @property
    def idle(self) -> bool:
        return self.job is None and self.stopping is None


class WorkerProcesses:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.context = multiprocessing.get_context("forkserver")
        # What every worker needs is imported once, in the forkserver, before it forks them.
        self.context.set_forkserver_preload(["pool.worker", *config.task_modules])
        self.slots: list[Slot] = []

    def start(self, count: int) -> None:
        for _ in range(count):
            parent, child = self.context.Pipe(duplex=True)
            process = self.context.Process(target=worker_main, args=(child, self.config), name="pool-worker")
            process.start()
            child.close()
            self.slots.append(Slot(process=process, conn=parent))

    def remove(self, slot: Slot) -> None:
        self.slots.remove(slot)
        slot.conn.close()

    def busy(self) -> list[Slot]:
        """Slots running a job, or being stopped."""
        return [s for s in self.slots if s.job is not None or s.stopping is not None]

    def signal(self, slot: Slot, reason: str, grace: float) -> None:
        """Record why, then SIGTERM the job's process group; SIGKILL follows after ``grace``."""
        slot.stopping = reason
        slot.kill_at = time.monotonic() + grace
        signal_group(slot.process.pid, signal.SIGTERM)

    def stop(self) -> None:
        for slot in self.slots:
            slot.conn.close()  # an idle worker sees EOF and exits
        deadline = time.monotonic() + STOP_WAIT
        for slot in self.slots:
            slot.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                signal_group(slot.process.pid, signal.SIGKILL)
                slot.process.join(timeout=STOP_WAIT)
