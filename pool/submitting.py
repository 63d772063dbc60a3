"""Submitting jobs: a file written atomically into incoming/ (the manager takes it when it
runs), or, with ``fallback="inline"`` and no manager serving, a job run at once by an
inline manager of its own (pool/inline.py), as subprocess.run would run it, but tracked.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from .errors import InvalidArgument, InvalidJobSpec, NoManagerWarning, SpoolError
from .job import Job
from .jobfile import parse_job
from .model import JobSpec, JobStatus, encode_json, new_job_id, new_status, utc_now
from .requesting import Requesting


class Submitting(Requesting):
    def submit(self, task: str | Any, *args: Any, kwargs: dict[str, Any] | None = None,
               fallback: str | None = None, **job_options: Any) -> Job:
        """Submit a Python job: ``task`` is ``"module:function"`` or a ``@pool.task``
        function; ``job_options`` are the job keys (priority, retries, timeout, ...;
        ``at``: a datetime, ``delay``: seconds or a timedelta, to start it later;
        ``after``: jobs or ids it waits for).
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
            raise InvalidArgument(f"fallback must be None or 'inline', not {fallback!r}")
        doc = dict(doc)
        if isinstance(doc.get("at"), datetime):  # no offset: local time, as in a job file
            doc["at"] = doc["at"].isoformat()
        if isinstance(doc.get("delay"), timedelta):
            doc["delay"] = doc["delay"].total_seconds()
        if isinstance(doc.get("after"), (list, tuple)):  # jobs, or their ids
            doc["after"] = [job.id if isinstance(job, Job) else job for job in doc["after"]]
        spec = self.prepared(doc)
        if not self.dir.exists():
            if fallback != "inline":  # a mistyped path must not become a spool nobody serves
                raise SpoolError(f"no spool at {self.dir.root} (start `pool serve`, or pass --spool)")
            self.dir.create()
        if self.dir.has_status(spec.id) or (self.dir.incoming / f"{spec.id}.json").exists():
            raise InvalidJobSpec(f"job {spec.id!r}: id already exists in {self.dir.root}")
        if fallback == "inline" and not self.dir.manager_running():
            if spec.at is not None or spec.delay or spec.after:
                raise InvalidArgument(f"job {spec.id!r} waits ('at', 'delay', 'after'): a manager starts it once "
                                      "it may; with none serving, fallback='inline' cannot")
            return self._run_inline(spec)
        self.drop_job(spec, doc, self.job_file_mode())
        if not self.dir.manager_running():
            warnings.warn(f"no manager is serving {self.dir.root}: job {spec.id!r} waits in incoming/ until `pool "
                          "serve` runs (fallback='inline' runs it at once instead)", NoManagerWarning, stacklevel=3)
        return Job(self, spec.id)

    def prepared(self, doc: dict[str, Any]) -> JobSpec:
        """Give the job document (changed in place) what a submission adds, its id, time of
        submission and name, and check it. Raises InvalidJobSpec naming the field at fault."""
        doc.setdefault("id", new_job_id())
        doc.setdefault("submitted_at", utc_now())  # jobs of one priority start in this order
        command = doc.get("command")
        runs = isinstance(command, list) and command and isinstance(command[0], str)
        program = os.path.basename(command[0]) if runs and isinstance(command, list) else ""
        spec = parse_job(doc, "submitted job", default_name=doc.get("task") or program or "command")
        doc["name"] = spec.name
        return spec

    def drop_job(self, spec: JobSpec, doc: dict[str, Any], mode: int) -> None:
        """Write the job's file into incoming/ (atomically: a manager never sees part of it);
        to a manager serving with --durable, on disk before this returns."""
        try:
            data = encode_json(doc)
        except ValueError as exc:
            raise InvalidJobSpec(f"job {spec.id!r}: {exc}") from None
        folder = self.dir.drop.folder
        serving = self.dir.serving()
        folder.durable = serving is not None and serving.durable is True  # as the manager serves now
        folder.write_atomic(f"{spec.id}.json", data, mode)
        folder.sync()

    def job_file_mode(self) -> int:
        """A job file may hold its submitter's environment: in a spool served by root (which
        reads any file), a member's is hers alone (0600), else the group's too (0640: a
        manager of another user reads it through the group, and so may every member)."""
        try:
            served_by_root = os.stat(self.dir.root).st_uid == 0
        except OSError:
            served_by_root = False
        return 0o600 if served_by_root and os.geteuid() != 0 else 0o640

    def _run_inline(self, spec: JobSpec) -> Job:
        """No manager: the job gets its status here and an inline manager of its own
        (pool.inline), as subprocess.run would run it, but tracked like any job. The
        inline manager's hold is taken before the status exists and handed over, so a
        manager starting meanwhile never finds the job without someone looking after it."""
        from .inline import start_inline_manager

        hold = self.dir.locks.supervise(spec.id)
        if hold is None:
            raise InvalidJobSpec(f"job {spec.id!r}: id already exists in {self.dir.root}")
        try:
            self._ledger().create(new_status(spec, utc_now(), os.geteuid()), "accepted (inline: no manager serving)")
            modules = (spec.task.split(":", 1)[0],) if spec.task else ()
            start_inline_manager(self.dir, spec.id, hold, modules, allow_commands=spec.command is not None)
        finally:
            os.close(hold)
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
