"""One attempt on a worker machine, in a process forked for it by its supervisor
(worker.py): the leader of a session and process group of its own, its output on fds 1
and 2 (a pipe the supervisor reads), its messages on another. It never sees the hub's
spool: it runs the job's code here (pool/detached.py).

Forked, not started afresh: a new interpreter importing pool took 130 ms an attempt
(benchmarks/scaleout.py), the whole of a tiny job's cost. What the forked process keeps
of its parent (a Celery pool process) is undone first: its signal handlers, its
stdout and stderr (Celery sends them to its log), its logging handlers.

It cannot outlive its supervisor: the supervisor holds the write end of the lifeline,
and when that closes (the supervisor exited, or was killed with -9), a thread here
kills the whole group, job and all."""

from __future__ import annotations

import io
import logging
import os
import signal
import sys
import threading
from multiprocessing.connection import Connection

from pool import messages as msg
from pool.attempt import Attempts, WorkerConfig
from pool.detached import run_detached
from pool.reporter import Flusher
from pool.worker import become_runner

RESET_SIGNALS = (signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGCHLD)


def hold_lifeline(fd: int) -> None:
    """Kill the group once ``fd`` reads end of file: its supervisor is gone."""

    def watch() -> None:
        while True:
            try:
                if not os.read(fd, 1):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, name="pool-lifeline", daemon=True).start()


def run_attempt_here(config: WorkerConfig, order: msg.RunAttempt, messages: int, lifeline: int) -> None:
    """Run the attempt in this process (just forked, fds 1 and 2 its output), saying
    everything on ``messages``."""
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    for signum in RESET_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    become_runner((), config.sys_path)
    hold_lifeline(lifeline)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True, errors="backslashreplace")
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True, errors="backslashreplace")
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(logging.StreamHandler(sys.stderr))
    for fd in (messages, lifeline):
        os.set_inheritable(fd, False)  # the job's own processes hold neither
    run_detached(order, Connection(messages).send_bytes, Attempts(config), Flusher())
