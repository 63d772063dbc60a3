"""Run by tests/test_promises_runs.py in a process of its own (a worker points fds 1 and 2
at a job's log, which must not be pytest's): a real worker runs one attempt with an
exception injected at step STEP of its attempt, then a late write is tried the way a
flusher thread would make it, and what happened is printed as JSON.

    python worker_steps_child.py SPOOL STEP
"""

from __future__ import annotations

import os
import sys

import orjson

import pool.worker as worker_module
from pool import messages as msg
from pool.attempt import WorkerConfig
from pool.jobfile import parse_job
from pool.ledger import Ledger, append_to_events
from pool.lifecycle import Role
from pool.model import new_status, utc_now
from pool.reporter import StatusReporter
from pool.spool import SpoolDir

# The steps of Worker._attempt, each a name in pool.worker's namespace or an attribute
# of its objects, replaced by one that raises.
STEPS = ("open_log", "set_reporter", "flusher_watch", "run", "end_rest_of_group", "finish")


class Injected(Exception):
    pass


def fail(*args: object, **kwargs: object) -> None:
    raise Injected("injected")


def main(root: str, step: str) -> None:
    spool = SpoolDir(root)
    spool.create()
    spec = parse_job({"task": "pooltest_tasks:add", "args": [1, 2], "id": f"j-{step}"}, "test", "j")
    queued = new_status(spec, utc_now())
    Ledger(spool, Role.CLIENT, append_to_events(spool)).create(queued, "accepted")
    reporters: list[StatusReporter] = []
    real_set_reporter = worker_module.set_reporter

    def keep(reporter: object) -> None:
        if isinstance(reporter, StatusReporter):
            reporters.append(reporter)
        real_set_reporter(reporter)  # type: ignore[arg-type]

    worker_module.set_reporter = keep  # type: ignore[assignment]
    worker = worker_module.Worker(WorkerConfig(spool=root, task_modules=("pooltest_tasks",)), lambda data: None)
    if step == "open_log":
        worker.output.to = fail  # type: ignore[method-assign]
    elif step == "set_reporter":
        worker_module.set_reporter = fail  # type: ignore[assignment]
    elif step == "flusher_watch":
        worker.flusher.watch = fail  # type: ignore[method-assign]
    elif step == "run":
        worker.attempts.run = fail  # type: ignore[method-assign]
    elif step == "end_rest_of_group":
        worker_module.end_rest_of_group = fail  # type: ignore[assignment]
    elif step == "finish":
        StatusReporter.finish = fail  # type: ignore[method-assign]
    reply = worker.run(msg.RunAttempt(queued))
    after = spool.read_status(spec.id)
    late = "none made"
    if reporters:  # a late write, as the flusher would make it once the attempt is over
        reporter = reporters[0]
        reporter.closed = False  # as if nothing had closed it: the funnel must still refuse
        reporter.latest = (0.5, 1.0, "late")
        reporter.write()
        late = "refused" if spool.read_status(spec.id) == after else "written"
    lease = spool.locks.lease(spec.id)
    os.write(REPORT_FD, orjson.dumps({"reply": type(reply).__name__, "state": after.state.value, "late": late,
                                      "flusher_watching": worker.flusher.reporter is not None,
                                      "lock_free": lease is not None}))
    os._exit(0)


REPORT_FD = 9  # our stdout, kept: the worker points fds 1 and 2 at the job's log, then at /dev/null

if __name__ == "__main__":
    os.dup2(1, REPORT_FD)
    main(sys.argv[1], sys.argv[2])
