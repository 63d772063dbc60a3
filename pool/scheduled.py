"""Schedules seen from a client: add one (a file in schedules/, which the manager reads
when it changes), list them with their next slot and last firing, pause, resume, remove,
or fire one now (an ordinary job, submitted as any other). The format and the slots are
pool/schedules.py's; firing on time is the manager's (pool/scheduling.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from .errors import InvalidArgument, InvalidJobSpec, JobNotFound, ScheduleNotFound, SpoolError
from .job import Job
from .model import State
from .safeio import UnsafeFile
from .schedules import NAME_PATTERN, InvalidSchedule, Record, Schedule, parse_schedule
from .submitting import Submitting

MAX_RUN_SUFFIX = 100


@dataclass(frozen=True)
class ScheduleInfo:
    """One schedule as `pool schedule list` shows it. ``schedule`` is None for a file the
    manager will reject (``problem`` says why)."""

    name: str
    schedule: Schedule | None
    record: Record | None = None
    next_at: datetime | None = None
    last_state: State | None = None
    problem: str | None = None


class Scheduling(Submitting):
    def schedule(self, name: str, task: str | Any, *args: Any, kwargs: dict[str, Any] | None = None,
                 cron: str | None = None, every: str | float | None = None, tz: str | None = None,
                 catch_up: str = "latest", overlap: str = "skip", replace_existing: bool = False,
                 **job_options: Any) -> Schedule:
        """Fire ``task(*args, **kwargs)`` on a cron line (``cron="0 3 * * *"``, in ``tz``
        or local time) or ``every`` so long (seconds, or ``"15m"``). ``job_options`` are
        the job keys of each firing (priority, retries, timeout, ...). Raises
        InvalidSchedule naming what is wrong."""
        name_of_task = task if isinstance(task, str) else f"{task.__module__}:{task.__qualname__}"
        job = {"task": name_of_task, "args": list(args), "kwargs": kwargs or {}, **job_options}
        return self.add_schedule(name, _when(cron, every, tz, catch_up, overlap, job), replace_existing)

    def schedule_command(self, name: str, argv: Sequence[str], cron: str | None = None,
                         every: str | float | None = None, tz: str | None = None, catch_up: str = "latest",
                         overlap: str = "skip", replace_existing: bool = False, **job_options: Any) -> Schedule:
        """Fire a command job (``argv``, run unchanged) on a schedule. It runs in this
        directory (or ``cwd``) with the manager's environment and ``env`` on top: a
        schedule keeps no copy of this process's environment (it is read by the spool's
        group, and outlives this shell)."""
        if isinstance(argv, str):
            raise InvalidJobSpec("schedule_command: argv must be a list of strings, not one string")
        job = {"command": list(argv), **job_options}
        job["cwd"] = os.path.abspath(job.get("cwd") or os.getcwd())
        return self.add_schedule(name, _when(cron, every, tz, catch_up, overlap, job), replace_existing)

    def add_schedule(self, name: str, doc: dict[str, Any], replace_existing: bool = False) -> Schedule:
        """Add a schedule given as the document of its file. Raises InvalidSchedule."""
        schedule = parse_schedule(doc, name)
        if not self.dir.exists():
            raise SpoolError(f"no spool at {self.dir.root} (start `pool serve`, or pass --spool)")
        self.dir.schedules.make(like=str(self.dir.status_dir))
        if not replace_existing and self.dir.schedules.stamp(name) is not None:
            raise InvalidSchedule(f"schedule {name!r} already exists (remove it first, or replace it)")
        self.dir.schedules.write(schedule.name, schedule)
        return schedule

    def schedules(self) -> list[ScheduleInfo]:
        """Every schedule of the spool, by name."""
        return [self.schedule_info(name) for name in self.dir.schedules.names()]

    def schedule_info(self, name: str) -> ScheduleInfo:
        """Raises ScheduleNotFound."""
        book = self.dir.schedules
        try:
            schedule = book.read(name)
        except FileNotFoundError:
            raise ScheduleNotFound(f"no schedule {name!r} in {self.dir.root}") from None
        except (InvalidJobSpec, UnsafeFile) as exc:
            return ScheduleInfo(name, None, problem=str(exc))
        record = book.record(name)
        since = record.through_time if record is not None else book.written_at(name)
        next_slot = None if schedule.paused else schedule.next_after(max(since, time.time()))
        state = None
        if record is not None and record.last_job is not None:
            try:
                state = self.status(record.last_job).state
            except JobNotFound:
                state = None
        return ScheduleInfo(name, schedule, record, None if next_slot is None else datetime.fromtimestamp(next_slot),
                            state)

    def remove_schedule(self, name: str) -> None:
        """No more firings; the jobs it fired stay. Raises ScheduleNotFound."""
        self._check_name(name)
        if not self.dir.schedules.remove(name):
            raise ScheduleNotFound(f"no schedule {name!r} in {self.dir.root}")

    def pause_schedule(self, name: str, paused: bool = True) -> Schedule:
        """Fire nothing until resumed (slots passed meanwhile are not caught up); what it
        fired runs on. Raises ScheduleNotFound, InvalidSchedule."""
        schedule = self._read(name)
        if schedule.paused != paused:
            schedule = replace(schedule, paused=paused)
            self.dir.schedules.write(schedule.name, schedule)
        return schedule

    def run_schedule(self, name: str) -> Job:
        """Fire the schedule now, once, outside its slots: an ordinary job (its id, the
        schedule's name and ``now-`` with the time). Raises ScheduleNotFound."""
        schedule = self._read(name)
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
        for n in range(MAX_RUN_SUFFIX):
            job_id = f"{name}-now-{stamp}" + (f"-{n + 1}" if n else "")
            if not (self.dir.has_status(job_id) or (self.dir.incoming / f"{job_id}.json").exists()):
                return self.submit_job(schedule.job_document(job_id))
        raise InvalidArgument(f"schedule {name!r} was fired now {MAX_RUN_SUFFIX} times this second")

    def _read(self, name: str) -> Schedule:
        self._check_name(name)
        try:
            return self.dir.schedules.read(name)
        except FileNotFoundError:
            raise ScheduleNotFound(f"no schedule {name!r} in {self.dir.root}") from None

    def _check_name(self, name: str) -> None:
        if NAME_PATTERN.match(name) is None:
            raise ScheduleNotFound(f"no schedule {name!r} in {self.dir.root} (a name is 1-40 letters, digits, "
                                   "'_' or '-')")


def _when(cron: str | None, every: str | float | None, tz: str | None, catch_up: str, overlap: str,
          job: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {"job": job, "catch_up": catch_up, "overlap": overlap}
    if cron is not None:
        doc["cron"] = cron
    if every is not None:
        doc["every"] = every
    if tz is not None:
        doc["tz"] = tz
    return doc
