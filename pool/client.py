"""The Python client: submit jobs and read their status without blocking.

It needs no running manager: a submission is a file written atomically into incoming/
(the manager takes it when it runs), and a status is a file any process can read.
Kill and retry are requests the manager carries out; with no manager running, the
client applies them itself to jobs that are not running.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from . import defaults, lifecycle
from .errors import (
    AmbiguousId,
    InvalidJobSpec,
    JobBusy,
    JobFailed,
    JobNotFinished,
    JobNotFound,
    JobRejected,
    WaitTimeout,
)
from .jobfile import parse_job
from .ledger import Ledger, append_to_events
from .lifecycle import Departure, Role
from .model import (
    JobSpec,
    JobStatus,
    State,
    encode_json,
    iso_time,
    new_job_id,
    new_status,
    parse_time,
    utc_now,
)
from .requests import RequestKind, check_grace
from .safeio import Owners, read_all
from .spool import SpoolDir

POLL_INTERVAL = 0.05
REQUEST_TIMEOUT = 10.0  # a serving manager takes a request within milliseconds
VERDICT_WAIT = 3.0  # ... and a job file within milliseconds too: seconds mean it is busy


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

    def submit_command(self, argv: Sequence[str], fallback: str | None = None, inherit: bool = True,
                       **job_options: Any) -> Job:
        """Submit a command job: ``argv`` runs unchanged, as ``subprocess.run(argv)`` would
        from here: in this directory (a relative ``cwd`` is taken from here too) and with
        this process's environment (``env`` adds to it). ``inherit=False``: in the
        manager's directory and environment instead, as a job file dropped by hand."""
        if isinstance(argv, str):
            raise InvalidJobSpec("submit_command: argv must be a list of strings, not one string")
        doc = {"command": list(argv), **job_options}
        if inherit:
            doc["cwd"] = os.path.abspath(doc.get("cwd") or os.getcwd())
            doc.setdefault("caller_env", dict(os.environ))
        elif isinstance(doc.get("cwd"), str):
            doc["cwd"] = os.path.abspath(doc["cwd"])
        return self.submit_job(doc, fallback)

    def submit_job(self, doc: dict[str, Any], fallback: str | None = None) -> Job:
        """Submit a job given as a job document (the JSON format of a job file)."""
        if fallback not in (None, "inline"):
            raise InvalidJobSpec(f"fallback must be None or 'inline', not {fallback!r}")
        doc = dict(doc)
        doc.setdefault("id", new_job_id())
        doc.setdefault("submitted_at", utc_now())  # jobs of one priority start in this order
        command = doc.get("command")
        runs = isinstance(command, list) and command and isinstance(command[0], str)
        program = os.path.basename(command[0]) if runs and isinstance(command, list) else ""
        spec = parse_job(doc, "submitted job", default_name=doc.get("task") or program or "command")
        if self.dir.has_status(spec.id) or (self.dir.incoming / f"{spec.id}.json").exists():
            raise InvalidJobSpec(f"job {spec.id!r}: id already exists in {self.dir.root}")
        doc["name"] = spec.name
        if not self.dir.incoming.is_dir():
            self.dir.create()
        if fallback == "inline" and not self.dir.manager_running():
            return self._run_inline(spec)
        try:
            data = encode_json(doc)
        except ValueError as exc:
            raise InvalidJobSpec(f"job {spec.id!r}: {exc}") from None
        self.dir.drop.folder.write_atomic(f"{spec.id}.json", data, 0o640)
        return Job(self, spec.id)

    def _run_inline(self, spec: JobSpec) -> Job:
        """No manager: the job gets its status here and a supervisor of its own
        (pool.inline), as subprocess.run would run it, but tracked like any job. The
        supervisor's hold is taken before the status exists and handed over, so a
        manager starting meanwhile never finds the job without someone looking after it."""
        from .inline import start_supervisor

        hold = self.dir.locks.supervise(spec.id)
        if hold is None:
            raise InvalidJobSpec(f"job {spec.id!r}: id already exists in {self.dir.root}")
        try:
            self._ledger().create(new_status(spec, utc_now(), os.geteuid()), "accepted (inline: no manager serving)")
            modules = (spec.task.split(":", 1)[0],) if spec.task else ()
            start_supervisor(self.dir, spec.id, hold, modules, allow_commands=spec.command is not None)
        finally:
            os.close(hold)
        return Job(self, spec.id)

    def _ledger(self) -> Ledger:
        return Ledger(self.dir, Role.CLIENT, append_to_events(self.dir))

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

    def documents(self, state: State | str | None = None) -> list[bytes]:
        """Every job's status document as it is on disk (newest first), for ``--json``.
        Each is parsed only to read its own ``state`` and ``created_at`` (a job's ``meta``
        may hold keys of those names too); jobs not yet taken in are included."""
        wanted = State(state).value if state is not None else None
        found: list[tuple[str, bytes]] = []
        for data in self.dir.raw_statuses():
            try:
                doc = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(doc, dict) and isinstance(doc.get("created_at"), str) and (
                    wanted is None or doc.get("state") == wanted):
                found.append((doc["created_at"], data))
        if wanted in (None, State.QUEUED.value):
            found += [(s.created_at, orjson.dumps(s.to_dict())) for s in self.submitted()]
        found.sort(key=lambda pair: pair[0], reverse=True)
        return [data for _, data in found]

    def rejected_lately(self, seconds: float = 86400.0) -> int:
        """How many files were refused in the last ``seconds``."""
        try:
            return self.dir.drop.rejected_since(time.time() - seconds)
        except OSError:
            return 0

    def events(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """The events still kept in events.jsonl (and the log before it), of one job or all."""
        return self.dir.events.read(self.dir.owners, job_id)

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

    def _submitted_status(self, job_id: str, entry: str | None = None) -> JobStatus:
        """The job a file in incoming/ (``<id>.json``, or its claim) describes, as queued."""
        entry = entry or f"{job_id}.json"
        folder = self.dir.drop.folder
        try:
            fd, st = folder.open_checked(entry, Owners(os.geteuid(), os.stat(folder.fd).st_gid), 1 << 20)
            try:
                data = read_all(fd, 1 << 20)
            finally:
                os.close(fd)
            spec = parse_job(orjson.loads(data), entry, default_name=job_id)
        except (OSError, ValueError):
            raise JobNotFound(f"no job {job_id!r} in {self.dir.root}") from None
        if spec.id != job_id:
            raise JobNotFound(f"no job {job_id!r} in {self.dir.root}")
        created = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(st.st_mtime))
        return new_status(spec, created)

    def status(self, job_id: str) -> JobStatus:
        """The job's status; a job not yet taken in by a manager shows as queued.
        Raises JobNotFound (saying why, when the job's file was rejected), CorruptStatus."""
        # A submitted job moves incoming/x -> incoming/.claimed~... -> status/, never back:
        # looking in that order (each look after the one before), then at status/ again,
        # finds it wherever it was between.
        try:
            return self.dir.read_status(job_id)
        except JobNotFound:
            pass
        try:
            return self._submitted_status(job_id)
        except JobNotFound:
            pass
        for entry in self.dir.drop.listing()[1]:  # listed only now: a claim made meanwhile is seen
            if entry.endswith(f"~{job_id}.json"):
                try:
                    return self._submitted_status(job_id, entry)
                except JobNotFound:
                    continue
        try:
            return self.dir.read_status(job_id)
        except JobNotFound:
            reason = self.dir.drop.rejection_reason(f"{job_id}.json")
            if reason:
                raise JobRejected(job_id, reason) from None
            raise

    def resolve(self, text: str) -> str:
        """The id of the one job whose id is ``text`` or starts with it (as git takes a
        commit's prefix). Raises AmbiguousId when several do; an id no job has is
        returned as it is, for ``status`` to say what became of it."""
        if self.dir.has_status(text) or not text:
            return text
        known = {*self.dir.status_ids(), *(s.id for s in self.submitted())}
        if text in known:
            return text
        matches = sorted(i for i in known if i.startswith(text))
        if len(matches) > 1:
            shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
            raise AmbiguousId(f"{text!r} is the start of {len(matches)} job ids ({shown}); give more of it")
        return matches[0] if matches else text

    def verdict(self, job_id: str, timeout: float = VERDICT_WAIT) -> JobStatus:
        """The job's status once a serving manager has taken it in, waiting up to
        ``timeout`` seconds for that (with no manager: at once). Raises JobRejected with
        the reason when its file was refused."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(job_id)
            if self.dir.has_status(job_id) or time.monotonic() >= deadline or not self.dir.manager_running():
                return status
            time.sleep(POLL_INTERVAL / 10)

    def rejections(self, since: float = 0.0) -> list[dict[str, Any]]:
        """Files refused since ``since`` (wall clock), oldest first: ``file``,
        ``rejected_at``, ``reason``, and ``name`` (its name in rejected/)."""
        return self.dir.drop.rejections(since)

    # ------------------------------------------------------------ acting
    def cancel(self, job_id: str, grace: float | None = None) -> JobStatus:
        """Ask for the job to be cancelled; returns its status right after asking.
        Raises InvalidJobSpec for a bad ``grace`` (seconds between SIGTERM and SIGKILL)."""
        if grace is not None:
            grace = check_grace(grace)
        status = self.status(job_id)
        if status.state.is_final:
            return status
        if self._take_back(job_id):
            return self.status(job_id)
        self.dir.box.file(RequestKind.KILL, job_id, grace)
        if not self.dir.manager_running():
            self._apply_without_manager(RequestKind.KILL, job_id, lifecycle.cancel_if_queued(utc_now()))
        return self.status(job_id)

    def retry(self, job_id: str) -> JobStatus:
        """Run a job that has ended (done, failed or cancelled) again, as a fresh series
        of attempts, from attempt 1, with the same arguments. Raises InvalidJobSpec when
        it has not ended."""
        status = self.status(job_id)
        if not status.state.is_final:
            raise InvalidJobSpec(f"job {job_id!r} is {status.state.value}; only a job that has ended can run again")
        self.dir.box.file(RequestKind.RETRY, job_id)
        if not self.dir.manager_running():
            self._apply_without_manager(RequestKind.RETRY, job_id, lifecycle.retry_if_final(utc_now()))
        else:
            self._await_request(RequestKind.RETRY, job_id, REQUEST_TIMEOUT)
        return self.status(job_id)

    def kill_grace(self, grace: float | None = None) -> float:
        """The seconds between SIGTERM and SIGKILL a kill asking for ``grace`` gives a job:
        that, or the serving manager's own default (`pool serve --kill-grace`), or pool's."""
        if grace is not None:
            return grace
        announced = self.dir.manager_kill_grace() if self.dir.manager_running() else None
        return announced if announced is not None else defaults.KILL_GRACE

    def acted_on(self, job_id: str) -> bool:
        """True when something will carry out a request for the job now: a manager, an
        inline supervisor, or the process that holds the job."""
        return self.dir.manager_running() or self.dir.locks.is_supervised(job_id) or self.dir.locks.is_leased(job_id)

    def _await_request(self, kind: RequestKind, job_id: str, timeout: float) -> None:
        """Wait (briefly) for the manager to take a request: it removes the file then."""
        deadline = time.monotonic() + timeout
        while self.dir.box.is_pending(kind, job_id) and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL / 5)

    def _apply_without_manager(self, kind: RequestKind, job_id: str, change: Any) -> None:
        """No manager serves the spool: a change to a job nothing runs is made here."""
        if self.dir.locks.is_supervised(job_id):
            return  # its inline supervisor carries the request out
        try:
            written = self._ledger().change(job_id, change, wait=0.5)
        except (JobBusy, JobNotFound, PermissionError):
            return  # held by a dead manager's worker, or not ours to write: the next manager
        if written is not None:
            self.dir.box.drop(kind, job_id)

    def _take_back(self, job_id: str) -> bool:
        """Cancel a job no manager has taken in yet: its file is taken back (unless a
        manager claims it first: a claim is a rename, so exactly one of the two wins) and
        it gets a cancelled status, so it is accounted for like any other job. False when
        there is no such file, or its status could not be written here (a shared spool's
        member may not write statuses: her request is carried out by the manager)."""
        name = f"{job_id}.json"
        try:
            queued = self._submitted_status(job_id)
        except JobNotFound:
            return False
        if not os.access(self.dir.status_dir, os.W_OK) or not self.dir.drop.folder.unlink(name):
            return False
        self._ledger().create(queued, "accepted")
        self._ledger().change(job_id, lifecycle.cancel_if_queued(utc_now(), "cancelled before any manager took it in"))
        return True

    def remove(self, job_id: str, timeout: float = REQUEST_TIMEOUT) -> None:
        """Forget a job: its status, lock and log files are deleted (its lines in
        events.jsonl stay, as history). A queued job is cancelled first, so nothing starts
        it meanwhile. Raises JobBusy for a running job (cancel it first), JobNotFound."""
        status = self.status(job_id)
        if status.state is State.RUNNING:
            raise JobBusy(f"job {job_id!r} is running; cancel it first")
        if not status.state.is_final:
            self.cancel(job_id)
            self.wait([job_id], timeout)
        deadline = time.monotonic() + timeout
        while not self._ledger().forget(job_id, lambda s: s.state.is_final, Departure.REMOVED):
            if not self.dir.has_status(job_id):
                return  # removed by someone else meanwhile
            if not self.dir.read_status(job_id).state.is_final:
                raise JobBusy(f"job {job_id!r} was queued again meanwhile (pool retry); not removed")
            if time.monotonic() >= deadline:
                raise JobBusy(f"job {job_id!r} is still held by its worker after {timeout:g}s; not removed")
            time.sleep(POLL_INTERVAL)

    def prune(self, older_than: float, states: set[State] | None = None, dry_run: bool = False) -> list[str]:
        """Remove the files of jobs that ended more than ``older_than`` seconds ago (in one
        of ``states``, default every final state). A job that is not final is never
        touched; each is checked again under its lock before it goes. Returns the ids."""
        wanted = states or {State.DONE, State.FAILED, State.CANCELLED}
        cutoff = time.time() - older_than
        removed = []
        ledger = self._ledger()
        for status in self.dir.iter_statuses():
            if status.state not in wanted or not status.finished_at:
                continue
            if parse_time(status.finished_at).timestamp() > cutoff:
                continue
            if dry_run or ledger.forget(status.id, lambda s: s.state in wanted and s.state.is_final, Departure.PRUNED):
                removed.append(status.id)
        return sorted(removed)

    def prune_events(self, older_than: float, dry_run: bool = False) -> int:
        """Drop the lines of events.jsonl (and the log before it) written more than
        ``older_than`` seconds ago, but never those of a job that has not ended (its
        timeline stays whole); returns how many."""
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=older_than)
        ongoing = {s.id for s in self.statuses() if not s.state.is_final}
        return self.dir.events.trim(self.dir.owners, iso_time(cutoff), ongoing, dry_run)

    def prune_rejected(self, older_than: float, dry_run: bool = False) -> list[str]:
        """Remove refused files (and their reasons) from rejected/ that were refused more
        than ``older_than`` seconds ago. Returns their names."""
        return self.dir.drop.prune_rejected(time.time() - older_than, dry_run)

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
            why = f": {status.error_text}" if status.error else ""
            raise JobFailed(f"job {self.id!r} {status.state.value}{why}", status)
        raise JobNotFinished(f"job {self.id!r} is {status.state.value}")

    def cancel(self, grace: float | None = None) -> JobStatus:
        return self.spool.cancel(self.id, grace)

    def logs(self) -> str:
        try:
            return self.spool.dir.log_path(self.id).read_text(errors="replace")
        except FileNotFoundError:
            self.status()  # raises JobNotFound for an unknown id
            return ""

