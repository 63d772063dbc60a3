"""The Python client: submit jobs and read their status without blocking.

It needs no running manager: a submission is a file written atomically into incoming/
(the manager takes it when it runs), and a status is a file any process can read.
Kill and retry are requests the manager carries out; with no manager running, the
client applies them itself to jobs that are not running.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import orjson

from . import lifecycle
from .atomic import write_atomic
from .errors import (
    InvalidJobSpec,
    JobBusy,
    JobFailed,
    JobNotFinished,
    JobNotFound,
    WaitTimeout,
)
from .model import (
    JobSpec,
    JobStatus,
    State,
    new_job_id,
    new_status,
    parse_job,
    parse_time,
    utc_now,
)
from .spool import SpoolDir

POLL_INTERVAL = 0.05
REQUEST_TIMEOUT = 10.0  # a serving manager takes a request within milliseconds


def default_spool_path() -> str:
    return os.environ.get("POOL_SPOOL") or "spool"


class Spool:
    """A spool directory seen from a program that submits and watches jobs."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.dir = SpoolDir(path if path is not None else default_spool_path())

    @property
    def path(self) -> Path:
        return self.dir.root

    # ------------------------------------------------------------ submitting
    def submit(self, task: str | Any, *args: Any, kwargs: dict[str, Any] | None = None,
               fallback: str | None = None, **job_options: Any) -> Job:
        """Submit a Python job: ``task`` is ``"module:function"`` or a ``@pool.task``
        function; ``job_options`` are the job keys (priority, retries, timeout, ...).
        With ``fallback="inline"`` and no manager serving the spool, the job runs at
        once in a process of its own instead of waiting for one. Raises InvalidJobSpec
        naming the field at fault."""
        name = task if isinstance(task, str) else f"{task.__module__}:{task.__qualname__}"
        doc = {"task": name, "args": list(args), "kwargs": kwargs or {}, **job_options}
        return self.submit_job(doc, fallback)

    def submit_command(self, argv: Sequence[str], fallback: str | None = None, **job_options: Any) -> Job:
        """Submit a command job: ``argv`` runs unchanged, as ``subprocess.run(argv)`` would."""
        if isinstance(argv, str):
            raise InvalidJobSpec("submit_command: argv must be a list of strings, not one string")
        return self.submit_job({"command": list(argv), **job_options}, fallback)

    def submit_job(self, doc: dict[str, Any], fallback: str | None = None) -> Job:
        """Submit a job given as a job document (the JSON format of a job file)."""
        if fallback not in (None, "inline"):
            raise InvalidJobSpec(f"fallback must be None or 'inline', not {fallback!r}")
        doc = dict(doc)
        doc.setdefault("id", new_job_id())
        command = doc.get("command")
        program = os.path.basename(command[0]) if isinstance(command, list) and command and isinstance(command[0], str) else ""
        spec = parse_job(doc, "submitted job", default_name=doc.get("task") or program or "command")
        if self.dir.has_status(spec.id) or (self.dir.incoming / f"{spec.id}.json").exists():
            raise InvalidJobSpec(f"job {spec.id!r}: id already exists in {self.dir.root}")
        doc["name"] = spec.name
        if not self.dir.incoming.is_dir():
            self.dir.create()
        if fallback == "inline" and not self.dir.manager_running():
            return self._run_inline(spec)
        write_atomic(self.dir.incoming / f"{spec.id}.json", orjson.dumps(doc))
        return Job(self, spec.id)

    def _run_inline(self, spec: JobSpec) -> Job:
        """No manager: the job gets its status here and a supervisor of its own
        (pool.inline), as subprocess.run would run it, but tracked like any job."""
        from .inline import start_supervisor

        self.dir.write_status(new_status(spec, utc_now()))
        self.dir.append_event(spec.id, None, State.QUEUED, 1, "accepted (inline: no manager serving)")
        modules = (spec.task.split(":", 1)[0],) if spec.task else ()
        start_supervisor(self.dir, spec.id, modules, allow_commands=spec.command is not None)
        return Job(self, spec.id)

    def run(self, task: str | Any, *args: Any, kwargs: dict[str, Any] | None = None, **job_options: Any) -> Any:
        """Run a Python job and return its result, blocking like a function call: through
        the manager if one serves the spool, else inline. Raises JobFailed."""
        job = self.submit(task, *args, kwargs=kwargs, fallback="inline", **job_options)
        job.wait()
        return job.result()

    def run_command(self, argv: Sequence[str], **job_options: Any) -> JobStatus:
        """Run a command job to its end, like ``subprocess.run(argv, check=True)``, but
        tracked; returns its final status. Raises JobFailed."""
        job = self.submit_command(argv, fallback="inline", **job_options)
        status = job.wait()
        job.result()
        return status

    # ------------------------------------------------------------ reading
    def job(self, job_id: str) -> Job:
        """A handle on job ``job_id``; raises JobNotFound if the spool has no such job."""
        handle = Job(self, job_id)
        handle.status()
        return handle

    def jobs(self, state: State | str | None = None) -> list[Job]:
        return [Job(self, s.id) for s in self.statuses(state)]

    def statuses(self, state: State | str | None = None,
                  cache: dict[str, tuple[int, JobStatus]] | None = None) -> list[JobStatus]:
        """Every job's status (newest first), optionally only those in ``state``. Pass the
        same ``cache`` dict to repeated calls to parse only what changed meanwhile."""
        wanted = State(state) if state is not None else None
        found = [s for s in self.dir.iter_statuses(cache) if wanted is None or s.state is wanted]
        found.extend(s for s in self.submitted() if wanted in (None, State.QUEUED))
        found.sort(key=lambda s: s.created_at, reverse=True)
        return found

    def submitted(self) -> list[JobStatus]:
        """Jobs submitted through this client and not yet taken in by a manager."""
        pending = []
        for name in self.dir.drop.names():
            job_id = name[:-5]
            if name.endswith(".json") and not self.dir.has_status(job_id):
                try:
                    pending.append(self._submitted_status(job_id))
                except JobNotFound:
                    continue
        return pending

    def _submitted_status(self, job_id: str, path: Path | None = None) -> JobStatus:
        path = path or self.dir.incoming / f"{job_id}.json"
        try:
            data, mtime = path.read_bytes(), path.stat().st_mtime
            spec = parse_job(orjson.loads(data), path.name, default_name=job_id)
        except (OSError, ValueError):
            raise JobNotFound(f"no job {job_id!r} in {self.dir.root}") from None
        if spec.id != job_id:
            raise JobNotFound(f"no job {job_id!r} in {self.dir.root}")
        created = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(mtime))
        return new_status(spec, created)

    def status(self, job_id: str) -> JobStatus:
        """The job's status; a job not yet taken in by a manager shows as queued.
        Raises JobNotFound (saying why, when the job's file was rejected)."""
        # A submitted job moves incoming/x -> incoming/.claimed~... -> status/, never back:
        # looking in that order, then at status/ again, finds it wherever it was between.
        try:
            return self.dir.read_status(job_id)
        except JobNotFound:
            pass
        claims = [self.dir.drop.claimed_path(c) for c in self.dir.drop.claimed_names() if c.endswith(f"~{job_id}.json")]
        for path in (self.dir.incoming / f"{job_id}.json", *claims):
            try:
                return self._submitted_status(job_id, path)
            except JobNotFound:
                continue
        try:
            return self.dir.read_status(job_id)
        except JobNotFound:
            reason = self.dir.drop.rejection_reason(f"{job_id}.json")
            if reason:
                raise JobNotFound(f"job {job_id!r} was rejected: {reason}") from None
            raise

    # ------------------------------------------------------------ acting
    def cancel(self, job_id: str, grace: float | None = None) -> JobStatus:
        """Ask for the job to be cancelled; returns its status right after asking."""
        status = self.status(job_id)
        if status.state.is_final:
            return status
        payload = {"grace": grace} if grace is not None else {}
        self.dir.file_request("kill", job_id, payload)
        if not self.dir.manager_running():
            self._apply_without_manager("kill", job_id, lambda s: lifecycle.cancel(s, utc_now())
                                        if s.state is State.QUEUED else None)
        return self.status(job_id)

    def retry(self, job_id: str) -> JobStatus:
        """Run a failed or cancelled job again, as a fresh series of attempts."""
        status = self.status(job_id)
        if status.state not in (State.FAILED, State.CANCELLED):
            raise InvalidJobSpec(f"job {job_id!r} is {status.state.value}; only failed or cancelled jobs can be retried")
        self.dir.file_request("retry", job_id)
        if not self.dir.manager_running():
            self._apply_without_manager("retry", job_id, lambda s: lifecycle.retry(s, utc_now())
                                        if s.state in (State.FAILED, State.CANCELLED) else None)
        else:
            self._await_request("retry", job_id, REQUEST_TIMEOUT)
        return self.status(job_id)

    def acted_on(self, job_id: str) -> bool:
        """True when something will carry out a request for the job now: a manager, an
        inline supervisor, or the process that holds the job."""
        return self.dir.manager_running() or self.dir.is_supervised(job_id) or self.dir.is_leased(job_id)

    def _await_request(self, kind: str, job_id: str, timeout: float) -> None:
        """Wait (briefly) for the manager to take a request: it removes the file then."""
        deadline = time.monotonic() + timeout
        while self.dir.request_pending(kind, job_id) and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL / 5)

    def _apply_without_manager(self, kind: str, job_id: str, change: Any) -> None:
        if not self.dir.has_status(job_id):
            if kind == "kill":
                self._take_back(job_id)
            return
        try:
            before, after = self.dir.update_status(job_id, change)
        except JobBusy:
            return  # a worker of a dead manager runs it: the request waits for the next manager
        if after is not None:
            reason = "cancelled by request" if kind == "kill" else "retry requested"
            self.dir.append_event(job_id, before.state, after.state, after.attempt, reason)
            self.dir.drop_request(kind, job_id)

    def _take_back(self, job_id: str) -> None:
        """Cancel a job no manager has taken in yet: its file is taken back (unless a
        manager claims it first, and then carries out the request itself), and it gets a
        cancelled status, so it is accounted for like any other job."""
        try:
            queued = self._submitted_status(job_id)
            os.unlink(self.dir.incoming / f"{job_id}.json")
        except (JobNotFound, FileNotFoundError):
            return
        self.dir.write_status(lifecycle.cancel(queued, utc_now(), "cancelled before any manager took it in"))
        self.dir.append_event(job_id, State.QUEUED, State.CANCELLED, 1, "cancelled before any manager took it in")
        self.dir.drop_request("kill", job_id)

    def prune(self, older_than: float, states: set[State] | None = None, dry_run: bool = False) -> list[str]:
        """Remove the files of jobs that ended more than ``older_than`` seconds ago (in one
        of ``states``, default every final state). A job that is not final is never
        touched; each is checked again under its lock before it goes. Returns the ids."""
        wanted = states or {State.DONE, State.FAILED, State.CANCELLED}
        cutoff = time.time() - older_than
        removed = []
        for status in self.dir.iter_statuses():
            if status.state not in wanted or not status.finished_at:
                continue
            if parse_time(status.finished_at).timestamp() > cutoff:
                continue
            if dry_run or self.dir.remove_job(status.id, lambda s: s.state in wanted and s.state.is_final):
                removed.append(status.id)
        return sorted(removed)

    def wait(self, job_ids: Iterable[str], timeout: float | None = None) -> list[JobStatus]:
        """Block until every job is final; raises WaitTimeout or JobNotFound."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ids = list(job_ids)
        pending = list(ids)
        done: dict[str, JobStatus] = {}
        while True:
            for job_id in list(pending):
                status = self.status(job_id)
                if status.state.is_final:
                    done[job_id] = status
                    pending.remove(job_id)
            if not pending:
                return [done[j] for j in ids]
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"{len(pending)} job(s) not finished after {timeout:g}s: {', '.join(pending)}")
            time.sleep(POLL_INTERVAL)


class Job:
    """A handle on one job; every call reads the spool afresh."""

    def __init__(self, spool: Spool, job_id: str) -> None:
        self.spool = spool
        self.id = job_id

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def status(self) -> JobStatus:
        return self.spool.status(self.id)

    def wait(self, timeout: float | None = None) -> JobStatus:
        """Block until the job is final and return its status; raises WaitTimeout."""
        return self.spool.wait([self.id], timeout)[0]

    def result(self) -> Any:
        """The job's return value. Raises JobNotFinished while it is not final, and
        JobFailed when it failed or was cancelled."""
        status = self.status()
        if status.state is State.DONE:
            return status.result
        if status.state.is_final:
            error = status.error or {}
            raise JobFailed(f"job {self.id!r} {status.state.value}: {error.get('type')}: {error.get('message')}", status)
        raise JobNotFinished(f"job {self.id!r} is {status.state.value}")

    def cancel(self, grace: float | None = None) -> JobStatus:
        return self.spool.cancel(self.id, grace)

    def logs(self) -> str:
        try:
            return self.spool.dir.log_path(self.id).read_text(errors="replace")
        except FileNotFoundError:
            self.status()  # raises JobNotFound for an unknown id
            return ""

