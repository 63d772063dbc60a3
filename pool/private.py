"""An Executor's private manager: `pool serve` for one owner, started and stopped with it.

    pool.Executor, no manager serving its spool
        --> python -m pool.private SPOOL --workers=N [--tasks=M ...] [--any-task] --owner-fd=R
            the manager's own loop (pool/manager.py), its owner holding the write end
            of a pipe whose read end it polls
    the pipe closed (the owner shut down, exited, or was killed with -9)
        --> it stops once no job is left to see to: the jobs are the spool's, they go on
    shutdown(wait=True): once its own futures are done, the owner asks it to stop
        (SIGTERM, as `pool stop`) and waits for it

It runs any importable function (``--any-task``) unless given ``--tasks``: the code is
its owner's, and it takes job files from its owner only (no ``--group``), as any
manager serving a spool takes them only from the spool's owner and group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from .errors import ManagerRunning, PoolError, SpoolError
from .importpath import import_path, python_command
from .spool import SpoolDir

log = logging.getLogger(__name__)

START_PATIENCE = 60.0  # seconds a private manager may take to start serving (a loaded machine)
STOP_PATIENCE = 60.0  # seconds it may take to stop once asked (its jobs are done by then)


class PrivateManager:
    """The caller's handle on its private manager process."""

    def __init__(self, process: subprocess.Popen[bytes], owner_w: int) -> None:
        self.process = process
        self.owner_w = owner_w  # closed: the manager stops once idle
        self.pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):  # Linux 5.3 and later
            self.pidfd = os.pidfd_open(process.pid)

    @classmethod
    def start(cls, spool: SpoolDir, workers: int, tasks: Sequence[str] | None, folders: Sequence[str] = ()) -> \
            PrivateManager:
        """Start it and wait until it serves ``spool``. Raises PoolError when it cannot
        (its reason is in what it printed), ManagerRunning when another manager took the
        spool meanwhile (jobs go to that one)."""
        owner_r, owner_w = os.pipe2(os.O_CLOEXEC)
        args = [str(spool.root), f"--workers={workers}", f"--owner-fd={owner_r}"]
        args += [f"--tasks={module}" for module in tasks] if tasks is not None else ["--any-task"]
        argv = python_command("pool.private", import_path(sys.path, folders), *args)
        try:
            # Its own session: a Ctrl-C meant for the caller does not stop the jobs.
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True, pass_fds=(owner_r,))
        except BaseException:
            os.close(owner_w)
            raise
        finally:
            os.close(owner_r)
        manager = cls(process, owner_w)
        deadline = time.monotonic() + START_PATIENCE
        while spool.serving_pid() != process.pid:  # the manager serving it, alive: this one
            code = process.poll()
            if code is not None:
                manager.close()
                if spool.manager_running():
                    raise ManagerRunning(str(spool.root), spool.manager_pid())
                raise PoolError(f"the executor's manager for {spool.root} could not start (exit code {code})")
            if time.monotonic() > deadline:
                manager.stop()
                raise PoolError(f"the executor's manager for {spool.root} did not start in {START_PATIENCE:g}s")
            time.sleep(0.005)
        return manager

    def alive(self) -> bool:
        return self.process.poll() is None

    def let_go(self) -> None:
        """Say the owner is done with it: it stops once no job is left to see to."""
        if self.owner_w >= 0:
            os.close(self.owner_w)
            self.owner_w = -1

    def stop(self) -> None:
        """Stop it now (as `pool stop` does: running jobs get its grace, then are put back,
        queued) and wait for it to end."""
        self.let_go()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_PATIENCE)
            except subprocess.TimeoutExpired:
                log.warning("the executor's manager (pid %d) did not stop in %gs: left running",
                            self.process.pid, STOP_PATIENCE)
        self.close()

    def close(self) -> None:
        self.let_go()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def main(argv: list[str]) -> int:
    from .manager import Manager, ManagerConfig

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="pool executor: %(message)s")
    root, *options = argv
    values = [o.split("=", 1) for o in options if "=" in o]
    modules = tuple(v for k, v in values if k == "--tasks")
    workers = int(dict(values)["--workers"])
    owner_fd = int(dict(values)["--owner-fd"])
    os.set_inheritable(owner_fd, False)  # the workers it starts do not keep its owner's pipe
    config = ManagerConfig(spool=root, workers=workers, task_modules=modules, any_task="--any-task" in options,
                           owner_fd=owner_fd)
    try:
        Manager(config).serve()
    except (ManagerRunning, SpoolError) as exc:
        log.warning("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
