"""A task run under limits (pool/limits.py), in a process forked from its worker for that
one attempt: the kernel stops that process past a limit, never the worker, and no limit
outlives the attempt (a process may never raise its own priority back, for one).

    worker --fork--> child: puts the limits on itself, runs the attempt (pool/detached.py),
                     saying everything through a pipe: Started, Progressed..., Ran | Broke
    worker <--relays its progress into the status, takes its verdict; wait4: how it ended--

The child stays in the worker's process group, so a kill of the job reaches it, and what
it leaves running is the worker's to end, as for any job. A command needs none of this:
its own process takes the limits before it runs the program (pool/commands.py).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from multiprocessing.connection import Connection

from . import messages as msg
from .attempt import Attempts
from .lifecycle import Failed, Verdict
from .limits import Limits
from .model import JobStatus
from .reporter import Reporter
from .runas import ended_by, relay
from .usage import KIB, Usage


def run_forked(status: JobStatus, reporter: Reporter, attempts: Attempts, limits: Limits) -> Verdict:
    """Run the attempt of ``status`` (queued: the child starts it) in a forked process
    under ``limits``; relay its progress to ``reporter``; return what its code made of it,
    or which limit ended it."""
    read_end, write_end = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        _child(status, attempts, write_end)  # its limits are put on it there
    os.close(write_end)
    conn = Connection(read_end)
    try:
        verdict = relay(conn, reporter, "its process under its limits")
    finally:
        conn.close()
        _, wait_status, used = os.wait4(pid, 0)
    if verdict is not None:
        return verdict
    usage = Usage(time.monotonic() - started, used.ru_utime, used.ru_stime, used.ru_maxrss * KIB)
    return Failed(ended_by(os.waitstatus_to_exitcode(wait_status), limits, "its process under its limits", usage.cpu),
                  usage=usage)


def _child(status: JobStatus, attempts: Attempts, write_end: int) -> None:
    from .detached import run_detached
    from .reporter import Flusher

    code = 0
    try:
        run_detached(msg.RunAttempt(status), Connection(write_end).send_bytes, attempts, Flusher())
    except BaseException:
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
