"""One attempt on a worker machine: ``python -m pool.scaleout.runner CONFIG FD LIFELINE``,
its RunAttempt on stdin, its messages on FD, its output on 1 and 2 (pipes its
supervisor reads). It never sees the hub's spool: it runs the job's code here
(pool/detached.py), in a process group and session of its own.

It cannot outlive its supervisor: the supervisor holds the write end of the lifeline,
and when that closes (the supervisor exited, or was killed with -9), a thread here
kills the whole group, job and all."""

from __future__ import annotations

import os
import signal
import sys
import threading
from multiprocessing.connection import Connection

import orjson

from pool import messages as msg
from pool.attempt import Attempts, WorkerConfig
from pool.detached import run_detached
from pool.reporter import Flusher
from pool.worker import become_runner


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


def main(config_json: str, messages: int, lifeline: int) -> None:
    config = WorkerConfig.from_dict(orjson.loads(config_json))
    order = msg.RunAttempt.decode(sys.stdin.buffer.read())
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    become_runner((), config.sys_path)
    hold_lifeline(lifeline)
    sys.stdout.reconfigure(line_buffering=True, errors="backslashreplace")  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True, errors="backslashreplace")  # type: ignore[union-attr]
    for fd in (messages, lifeline):
        os.set_inheritable(fd, False)  # the job's own processes hold neither
    conn = Connection(messages)
    run_detached(order, conn.send_bytes, Attempts(config), Flusher())


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
