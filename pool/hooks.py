"""Completion hooks: `pool serve --on-finish CMD` runs CMD once for each job that reaches
a final state, with the job's final status document on stdin and ``POOL_JOB_ID``,
``POOL_STATE``, ``POOL_EXIT_CODE`` (empty when it has none) and ``POOL_SPOOL`` in its
environment.

    hook: a job became final --> due --> CMD runs (its own session; up to MAX_RUNNING at
                                         once), output to logs/<id>.hook.log
    CMD ends (or its timeout kills it) --> status/<id>.hook: it ran, for which end
    start: each final job that ended since hooks were on, with no such record --> due

A hook is the manager's child, never the job's: whatever it does or however it ends, the
job's state stays as it is. It runs once per end of a job (a retried job that ends again
runs it again): the record says which end (the status's ``finished_at``) it ran for, so
a restarted manager runs it for an end whose hook never ended, and never again for one
whose hook did. A stopping manager gives running hooks its grace to end; one cut short
by the manager's stop or death runs again at its next start: at least once, and twice
only then.

``hooks.json`` in the spool says since when hooks are on: a manager started with them for
the first time runs none for the jobs that had ended before; one started without them
removes the file, so turning them on later starts afresh.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass

import orjson

from .context import Context
from .errors import CorruptStatus, JobNotFound
from .model import JobStatus, parse_time, utc_now
from .safeio import UnsafeFile

log = logging.getLogger(__name__)

MAX_RUNNING = 4  # hooks at once: a burst of ends never forks a thousand of them
SINCE_FILE = "hooks.json"


@dataclass
class Running:
    job_id: str
    ended: str  # the job's finished_at: the end it runs for
    proc: subprocess.Popen[bytes]
    pidfd: int
    deadline: float
    timed_out: bool = False

    def fileno(self) -> int:
        return self.pidfd


class Hooks:
    def __init__(self, ctx: Context, argv: tuple[str, ...], timeout: float) -> None:
        self.ctx = ctx
        self.argv = argv
        self.timeout = timeout
        self.due: dict[str, None] = {}  # job ids, in the order they ended
        self.running: dict[str, Running] = {}
        self.since = ""

    # ------------------------------------------------------------ which ends
    def open(self) -> None:
        """Hooks are on since the time in hooks.json (written now, the first time)."""
        top = self.ctx.spool.top
        try:
            self.since = str(orjson.loads(top.read(SINCE_FILE, self.ctx.spool.owners, 4096))["since"])
            parse_time(self.since)
        except (FileNotFoundError, UnsafeFile, ValueError, KeyError, TypeError):
            self.since = utc_now()
            top.write_atomic(SINCE_FILE, orjson.dumps({"since": self.since}), self.ctx.spool.file_mode)

    @staticmethod
    def off(ctx: Context) -> None:
        """A manager without hooks: the next one with them starts afresh."""
        ctx.spool.top.unlink(SINCE_FILE)

    def ended(self, job_id: str) -> None:
        """A job became final (heard)."""
        self.due[job_id] = None

    def recovered(self, status: JobStatus) -> None:
        """A final job found at start: due if it ended since hooks were on and no hook
        ran for that end."""
        if status.finished_at is not None and status.finished_at > self.since and (
                self.ran_for(status.id) != status.finished_at):
            self.due[status.id] = None

    def ran_for(self, job_id: str) -> str | None:
        try:
            return str(orjson.loads(self.ctx.spool.statuses.read(f"{job_id}.hook", self.ctx.spool.owners,
                                                                  4096))["ended"])
        except (FileNotFoundError, UnsafeFile, ValueError, KeyError, TypeError):
            return None

    # ------------------------------------------------------------ running them
    def waitables(self) -> list[Running]:
        return list(self.running.values())

    def next_deadline(self) -> float | None:
        return min((r.deadline for r in self.running.values() if not r.timed_out), default=None)

    def busy(self) -> bool:
        """Hooks wait to start while fewer than MAX_RUNNING run: come back at once."""
        return bool(self.due) and len(self.running) < MAX_RUNNING

    def step(self, now: float) -> None:
        for running in list(self.running.values()):
            if running.proc.poll() is not None:
                self._over(running)
            elif now >= running.deadline and not running.timed_out:
                log.warning("job %s: its on-finish hook ran past %gs: killed", running.job_id, self.timeout)
                running.timed_out = True
                with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                    os.killpg(running.proc.pid, signal.SIGKILL)
        while self.due and len(self.running) < MAX_RUNNING:
            job_id = next(iter(self.due))
            del self.due[job_id]
            if job_id not in self.running:  # else due again once it ends: one at a time per job
                self._start(job_id, now)

    def _start(self, job_id: str, now: float) -> None:
        spool = self.ctx.spool
        try:
            document = spool.statuses.read(f"{job_id}.json", spool.owners)
            status = JobStatus.decode(document, f"status/{job_id}.json")
        except (JobNotFound, CorruptStatus, UnsafeFile, FileNotFoundError):
            return  # removed meanwhile, or set aside: nothing to say
        if not status.state.is_final or status.finished_at is None:
            return  # retried meanwhile: its next end will be heard
        env = {**os.environ, "POOL_JOB_ID": job_id, "POOL_STATE": status.state.value, "POOL_SPOOL": str(spool.root),
               "POOL_EXIT_CODE": "" if status.exit_code is None else str(status.exit_code)}
        output = spool.log_folder.open_append(f"{job_id}.hook.log", spool.owners, spool.file_mode)
        try:
            with tempfile.TemporaryFile() as stdin:  # a pipe could fill: the hook may never read
                stdin.write(document)
                stdin.seek(0)
                proc = subprocess.Popen(self.argv, stdin=stdin, stdout=output, stderr=output, env=env,
                                        start_new_session=True, close_fds=True)
        except OSError as exc:
            os.write(output, f"pool: could not run the on-finish hook: {exc}\n".encode())
            os.close(output)
            log.warning("job %s: could not run its on-finish hook: %s", job_id, exc)
            self._record(job_id, status.finished_at, None)
            return
        os.close(output)
        self.running[job_id] = Running(job_id, status.finished_at, proc, os.pidfd_open(proc.pid),
                                       now + self.timeout)

    def _over(self, running: Running) -> None:
        del self.running[running.job_id]
        os.close(running.pidfd)
        code = running.proc.returncode
        if code != 0:
            log.warning("job %s: its on-finish hook %s (logs/%s.hook.log)", running.job_id,
                        "timed out" if running.timed_out else f"exited with {code}", running.job_id)
        self._record(running.job_id, running.ended, code)

    def _record(self, job_id: str, ended: str, code: int | None) -> None:
        self.ctx.spool.statuses.write_atomic(f"{job_id}.hook", orjson.dumps(
            {"ended": ended, "exit_code": code, "ran_at": utc_now()}), self.ctx.spool.file_mode)

    def close(self, grace: float) -> None:
        """The manager stops: hooks still running get up to ``grace`` seconds (and no more
        than their timeout) to end and be recorded; the rest are stopped, to run again at
        the next start."""
        for running in list(self.running.values()):
            left = min(running.deadline - self.ctx.clock.monotonic(), grace)
            try:
                running.proc.wait(timeout=max(0.0, left))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                    os.killpg(running.proc.pid, signal.SIGKILL)
                running.proc.wait()
                os.close(running.pidfd)
                del self.running[running.job_id]
                continue
            self._over(running)
