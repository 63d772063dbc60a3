"""One attempt of the relay engine (relay_engine.py): ``relay_child.py FD CONFIG``, the
job's RunAttempt on stdin. It never opens the spool: it runs the job's code here
(pool/detached.py) and says everything through its messages (FD) and its output
(stdout and stderr, a pipe its executor reads)."""

from __future__ import annotations

import os
import sys
from multiprocessing.connection import Connection

import orjson

from pool import messages as msg
from pool.attempt import Attempts, WorkerConfig
from pool.detached import run_detached
from pool.reporter import Flusher
from pool.worker import become_runner


def main(fd: int, config_json: str) -> None:
    config = WorkerConfig.from_dict(orjson.loads(config_json))
    order = msg.RunAttempt.decode(sys.stdin.buffer.read())
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    become_runner((), config.sys_path)
    sys.stdout.reconfigure(line_buffering=True, errors="backslashreplace")  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True, errors="backslashreplace")  # type: ignore[union-attr]
    conn = Connection(fd)
    run_detached(order, conn.send_bytes, Attempts(config), Flusher())


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
