"""What the manager's steps share: its configuration, the spool, the ledger every change
goes through, the clock, and the state of a spool that cannot be written.

Each step (intake, dispatch, outcomes, control, recovery) takes this and the few other
steps it works with, never bound methods of each other; the clock is read through it, so
a test that steps the manager by hand swaps it here, once, for all of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import defaults
from .clock import Clock
from .ledger import Ledger
from .limits import NO_LIMITS, Capacity, Limits
from .spool import SpoolDir
from .trouble import Trouble


@dataclass(frozen=True)
class ManagerConfig:
    spool: str
    workers: int = os.cpu_count() or 1
    task_modules: tuple[str, ...] = ()
    allow_commands: bool = False
    kill_grace: float = defaults.KILL_GRACE
    shutdown_grace: float = defaults.SHUTDOWN_GRACE
    settle: float = defaults.SETTLE
    rescan_interval: float = defaults.RESCAN_INTERVAL
    max_file_bytes: int = defaults.MAX_FILE_BYTES
    allow_loader_env: bool = False
    group_gid: int | None = None  # --group: a second group that may submit
    events_max_bytes: int = defaults.EVENTS_MAX_BYTES
    max_log_bytes: int | None = None  # a job's log is cut to its tail past this (pool.joblog)
    max_checkpoint_bytes: int = defaults.MAX_CHECKPOINT_BYTES  # pool.checkpoint() refuses more
    job_limits: Limits = NO_LIMITS  # --job-memory, ...: what a job that sets no limit of its own may use
    # --memory, --cpus: what the declared needs of running jobs must fit in (None: the machine's)
    memory: int | None = None
    cpus: float | None = None
    reserve_after: float = defaults.RESERVE_AFTER  # the most urgent job that does not fit then holds what it needs
    durable: bool = False  # --durable: what pool acts on is on disk first (README, "What survives what")

    @property
    def capacity(self) -> Capacity:
        machine = Capacity.of_machine()
        return Capacity(self.memory if self.memory is not None else machine.memory,
                        self.cpus if self.cpus is not None else machine.cpus)
    engine: str = "local"  # where attempts run: pool.engines
    broker: str | None = None  # the celery engine's Redis (pool serve --broker URL)
    members_as_root: bool = False  # --members-as-root: a member's job runs as root, not as her
    on_finish: tuple[str, ...] = ()  # --on-finish: the argv run once per job that ends (pool.hooks)
    hook_timeout: float = defaults.HOOK_TIMEOUT
    # An Executor's private manager (pool/private.py): it runs any importable function
    # (its owner's code, on a spool only its owner may write), and once its owner is
    # gone (this pipe's other end closed: shut down, or killed) it stops when idle.
    any_task: bool = False
    owner_fd: int | None = None


@dataclass
class Context:
    config: ManagerConfig
    spool: SpoolDir
    ledger: Ledger
    clock: Clock
    trouble: Trouble
