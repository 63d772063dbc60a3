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
import pwd
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any

import orjson

from .context import Context
from .errors import CorruptStatus, JobNotFound
from .model import JobStatus, parse_time, utc_now
from .safeio import UnsafeFile

log = logging.getLogger(__name__)

MAX_RUNNING = 4  # hooks at once: a burst of ends never forks a thousand of them
SINCE_FILE = "hooks.json"


@dataclass(frozen=True)
class Hook:
    argv: tuple[str, ...]
    user: int | None = None  # run as this user (a member's own hook, the manager being root)
    cwd: str | None = None


@dataclass
class Running:
    """The hooks of one end of a job, run one after another."""

    job_id: str
    ended: str  # the job's finished_at: the end they run for
    document: bytes  # its final status, each one's stdin
    env: dict[str, str]
    hooks: list[Hook]
    codes: list[int | None] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    pidfd: int = -1
    deadline: float = 0.0
    timed_out: bool = False

    def fileno(self) -> int:
        return self.pidfd


class Hooks:
    """``argv``: `pool serve --on-finish` (empty: none); a job's own ``on_finish`` runs too,
    after it. ``as_submitter``: a manager running as root runs a member's own hook as her."""

    def __init__(self, ctx: Context, argv: tuple[str, ...], timeout: float, as_submitter: bool = False) -> None:
        self.ctx = ctx
        self.argv = argv
        self.timeout = timeout
        self.as_submitter = as_submitter
        self.due: dict[str, None] = {}  # job ids, in the order they ended
        self.running: dict[str, Running] = {}
        self.since = ""

    # ------------------------------------------------------------ which ends
    def open(self) -> None:
        """The manager's hook is on since the time in hooks.json (written now, the first
        time); with none, the file goes, so turning it on later starts afresh."""
        top = self.ctx.spool.top
        if not self.argv:
            top.unlink(SINCE_FILE)
            return
        try:
            self.since = str(orjson.loads(top.read(SINCE_FILE, self.ctx.spool.owners, 4096))["since"])
            parse_time(self.since)
        except (FileNotFoundError, UnsafeFile, ValueError, KeyError, TypeError):
            self.since = utc_now()
            top.write_atomic(SINCE_FILE, orjson.dumps({"since": self.since}), self.ctx.spool.file_mode)

    def ended(self, job_id: str, status: JobStatus | None) -> None:
        """A job became final (heard; ``status``: one of the job's, when at hand, whose spec
        says whether it has a hook of its own; None: its status file is read to know)."""
        if self.argv or status is None or status.spec.on_finish:
            self.due[job_id] = None

    def recovered(self, status: JobStatus) -> None:
        """A final job found at start: due if a hook is its (the manager's, for an end
        since it was on; its own) and none ran for that end."""
        if status.finished_at is not None and self._hooks(status, recovering=True) and (
                self.ran_for(status.id) != status.finished_at):
            self.due[status.id] = None

    def _hooks(self, status: JobStatus, recovering: bool = False) -> list[Hook]:
        hooks = []
        if self.argv and not (recovering and (status.finished_at or "") <= self.since):
            hooks.append(Hook(self.argv))
        if status.spec.on_finish:
            member = self.as_submitter and status.submitter not in (None, 0)
            hooks.append(Hook(tuple(status.spec.on_finish), status.submitter if member else None, status.spec.cwd))
        return hooks

    def ran_for(self, job_id: str) -> str | None:
        try:
            return str(orjson.loads(self.ctx.spool.statuses.read(f"{job_id}.hook", self.ctx.spool.owners,
                                                                  4096))["ended"])
        except (FileNotFoundError, UnsafeFile, ValueError, KeyError, TypeError):
            return None

    # ------------------------------------------------------------ running them
    def waitables(self) -> list[Running]:
        return [r for r in self.running.values() if r.proc is not None]

    def next_deadline(self) -> float | None:
        return min((r.deadline for r in self.running.values() if not r.timed_out), default=None)

    def busy(self) -> bool:
        """Hooks wait to start while fewer than MAX_RUNNING run: come back at once."""
        return bool(self.due) and len(self.running) < MAX_RUNNING

    def step(self, now: float) -> None:
        for running in list(self.running.values()):
            if running.proc is not None and running.proc.poll() is not None:
                self._over(running, now)
            elif now >= running.deadline and not running.timed_out and running.proc is not None:
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
        hooks = self._hooks(status)
        if not status.state.is_final or status.finished_at is None or not hooks:
            return  # retried meanwhile: its next end will be heard
        env = {**os.environ, "POOL_JOB_ID": job_id, "POOL_STATE": status.state.value, "POOL_SPOOL": str(spool.root),
               "POOL_EXIT_CODE": "" if status.exit_code is None else str(status.exit_code)}
        running = Running(job_id, status.finished_at, document, env, hooks)
        self.running[job_id] = running
        self._next(running, now)

    def _next(self, running: Running, now: float) -> None:
        """Start the next hook of the job's end; once none is left, record that they ran."""
        spool = self.ctx.spool
        while len(running.codes) < len(running.hooks):
            hook = running.hooks[len(running.codes)]
            output = spool.log_folder.open_append(f"{running.job_id}.hook.log", spool.owners, spool.file_mode)
            try:
                with tempfile.TemporaryFile() as stdin:  # a pipe could fill: the hook may never read
                    stdin.write(running.document)
                    stdin.seek(0)
                    running.proc = subprocess.Popen(hook.argv, stdin=stdin, stdout=output, stderr=output,
                                                    start_new_session=True, close_fds=True, **self._as(hook, running))
            except (OSError, KeyError, subprocess.SubprocessError) as exc:
                os.write(output, f"pool: could not run the on-finish hook {hook.argv[0]!r}: {exc}\n".encode())
                log.warning("job %s: could not run its on-finish hook: %s", running.job_id, exc)
                running.codes.append(None)
                continue
            finally:
                os.close(output)
            running.pidfd = os.pidfd_open(running.proc.pid)
            running.deadline, running.timed_out = now + self.timeout, False
            return
        del self.running[running.job_id]
        failed = [c for c in running.codes if c != 0]
        self.ctx.spool.statuses.write_atomic(f"{running.job_id}.hook", orjson.dumps(
            {"ended": running.ended, "exit_code": failed[0] if failed else 0, "exit_codes": running.codes,
             "ran_at": utc_now()}), self.ctx.spool.file_mode)

    def _as(self, hook: Hook, running: Running) -> dict[str, Any]:
        """How a hook is started: as the manager, in its environment; a member's own hook
        (the manager being root) as her, with her groups and her HOME, in the job's
        directory, or her home (or /, as pool/runas.py does, when she has none)."""
        if hook.user is None:
            return {"env": running.env, "cwd": hook.cwd}
        entry = pwd.getpwuid(hook.user)
        return {"env": {**running.env, "HOME": entry.pw_dir, "USER": entry.pw_name, "LOGNAME": entry.pw_name},
                "user": hook.user, "group": entry.pw_gid,
                "cwd": hook.cwd or (entry.pw_dir if os.path.isdir(entry.pw_dir) else "/"),
                "extra_groups": os.getgrouplist(entry.pw_name, entry.pw_gid)}

    def _over(self, running: Running, now: float) -> None:
        assert running.proc is not None
        os.close(running.pidfd)
        code = running.proc.returncode
        running.proc = None
        if code != 0:
            log.warning("job %s: its on-finish hook %s (logs/%s.hook.log)", running.job_id,
                        "timed out" if running.timed_out else f"exited with {code}", running.job_id)
        running.codes.append(code)
        self._next(running, now)

    def close(self, grace: float) -> None:
        """The manager stops: hooks still running get up to ``grace`` seconds (and no more
        than their timeout) to end and be recorded; the rest are stopped, to run again at
        the next start."""
        for running in list(self.running.values()):
            if running.proc is None:
                continue
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
            # Ended in time: recorded once every hook of that end ran (the next ones get
            # no more time: run again at the next start, as for a stop that cut them short).
            code = running.proc.returncode
            os.close(running.pidfd)
            running.codes.append(code)
            if len(running.codes) == len(running.hooks):
                running.proc = None
                self._next(running, self.ctx.clock.monotonic())
            else:
                del self.running[running.job_id]
