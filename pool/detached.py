"""An attempt run where there is no spool (another machine, a sandbox): it reports
everything through messages, and its executor's manager writes it into the spool.

    runner --Started(pid, started_at)--> ... --Progressed--> ... --Ran(verdict) | Broke-->

The job's output goes to fds 1 and 2 as the caller set them up (a pipe its executor
reads and turns into ``Output`` events, say). The process must be a runner already
(``pool.worker.become_runner``: the leader of its own process group, a subreaper), so a
stop of its group reaches everything the job started, and what the job leaves running
when it ends is ended with it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from . import lifecycle
from . import messages as msg
from .attempt import Attempts
from .executor import Completed, Outcome, Progress, WorkerFailed
from .limits import apply as apply_limits
from .model import JobStatus, utc_now
from .procs import end_rest_of_group, process_start_time
from .progress import set_reporter
from .reporter import Flusher, MessageReporter

log = logging.getLogger(__name__)


def run_detached(order: msg.RunAttempt, send: Callable[[bytes], None], attempts: Attempts, flusher: Flusher) -> None:
    """Run the attempt ``order`` names to its end, saying everything through ``send``. A
    task's limits (pool/limits.py) are put on this process first: it is the attempt's own
    (a command takes them in its own process)."""
    job = order.job
    pid = os.getpid()
    running = lifecycle.start(job, pid, process_start_time(pid), utc_now())
    send(msg.encode_reply(msg.Started(job.id, job.attempt, pid, running.started_at or running.updated_at)))
    reporter = MessageReporter(running, attempts.config.progress_interval, send)
    try:
        if job.spec.task is not None:
            apply_limits(attempts.config.limits_of(job))
        set_reporter(reporter)
        flusher.watch(reporter)
        try:
            verdict = attempts.run(running, reporter)
        finally:
            end_rest_of_group()  # what the job left running ends with it
            set_reporter(None)
            flusher.watch(None)
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
    except Exception as exc:  # a bug of the runner, not the job's own failure
        reporter.close()
        log.exception("job %s: runner error", job.id)
        send(msg.encode_reply(msg.Broke(job.id, job.attempt, True, f"{type(exc).__name__}: {exc}")))
        return
    last = reporter.close()
    send(msg.encode_reply(msg.Ran(job.id, job.attempt, verdict=verdict, progress=(last.progress, last.message))))


def heard(reply: msg.Reply, job: JobStatus) -> Progress | Outcome | None:
    """What a runner's message other than ``Started`` tells its executor: progress to
    write, or how the attempt ended (its last message: what stands unless it was stopped
    before it began). None for any other message."""
    if isinstance(reply, msg.Progressed):
        return Progress(job.id, job.attempt, reply.fraction, reply.message)
    if isinstance(reply, msg.Ran):
        fraction, message = reply.progress or (None, None)
        return Completed(reply.verdict, Progress(job.id, job.attempt, fraction, message))
    if isinstance(reply, msg.Broke):
        return WorkerFailed(reply.why, reply.began)
    return None
