"""The options that describe a job on the command line, shared by ``pool submit`` and
``pool run``, and the job they build."""

from __future__ import annotations

import re
import shlex
from datetime import datetime, timedelta
from typing import Any

import click
import orjson

from pool.client import Job, Spool
from pool.model import TASK_PATTERN

from .common import Size

# Everything from the first argument on (a task, a program) belongs to the job, options too:
# `pool submit --command ls -q` runs `ls -q`, as `pueue add` and `tsp` do.
ARGV_AFTER_OPTIONS = {"ignore_unknown_options": True, "allow_interspersed_args": False}


def json_or_text(value: str) -> Any:
    """A command-line argument as JSON when it parses (``42``, ``[1,2]``), else a string."""
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value


def key_values(pairs: tuple[str, ...], what: str, parse: Any = json_or_text) -> dict[str, Any]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=what)
        result[key] = parse(value)
    return result


JOB_OPTIONS = [
    click.option("--command", "is_command", is_flag=True, help="ARGS is a program's argv, run unchanged."),
    click.option("--kw", "kwargs", multiple=True, metavar="KEY=VALUE",
                 help="A keyword argument (VALUE as JSON, else text)."),
    click.option("--name", help="A label for the job."),
    click.option("--priority", type=int, help="Higher runs first."),
    click.option("--group", help="Its group: at most the group's limit of them run at once (pool group set)."),
    click.option("--retries", type=click.IntRange(0), help="Extra attempts after a failure."),
    click.option("--retry-delay", type=click.FloatRange(0), help="Seconds before the first retry (default 1)."),
    click.option("--retry-backoff", type=click.FloatRange(1),
                 help="Each retry waits this many times longer (default 2)."),
    click.option("--timeout", type=click.FloatRange(0, min_open=True), help="Seconds per attempt."),
    click.option("--meta", multiple=True, metavar="KEY=VALUE",
                 help="Free-form data kept in the status (VALUE as JSON, else text; repeatable)."),
    click.option("--cwd", help="Working directory of a command job."),
    click.option("--env", "env", multiple=True, metavar="K=V", help="Environment of a command job (repeatable)."),
    click.option("--progress", "progress_form", help="Command jobs: auto, none, or a regex with one group."),
    click.option("--on-finish", "on_finish", metavar="CMD",
                 help="Run CMD (split as a shell would) once the job ends, its status on stdin (the manager must "
                      "allow commands)."),
    click.option("--memory", type=Size(), help="Its memory limit (2G, 512M): past it, it fails (MemoryLimit)."),
    click.option("--cpu-seconds", type=click.FloatRange(1), help="Its CPU limit, in seconds: past it, it fails."),
    click.option("--nice", type=click.IntRange(0, 19), help="Its niceness (0-19: higher yields more)."),
    click.option("--open-files", type=click.IntRange(16, 1 << 20), help="How many files it may have open."),
    click.option("--needs-memory", type=Size(),
                 help="Memory it needs: it starts only while what runs leaves that much (pool serve --memory)."),
    click.option("--needs-cpus", type=click.FloatRange(0),
                 help="CPUs it needs: it starts only while what runs leaves that many (pool serve --cpus)."),
]


ID_OPTION = click.option("--id", "job_id", help="The job's id (generated if absent).")


def job_options(command: Any) -> Any:
    """The options that describe a job, shared by `pool submit` and `pool run`."""
    for option in reversed([*JOB_OPTIONS[:2], ID_OPTION, *JOB_OPTIONS[2:]]):
        command = option(command)
    return command


def firing_options(command: Any) -> Any:
    """The options that describe each firing of a schedule (its id is the slot's)."""
    for option in reversed(JOB_OPTIONS):
        command = option(command)
    return command


CLOCK_TIME = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?\Z")


def moment_from(text: str, now: datetime | None = None) -> str:
    """``--at``: ``14:00`` (or ``14:00:30``) is the next such local time, today or
    tomorrow; anything else is a job file's ``at`` (ISO 8601), checked there."""
    clock = CLOCK_TIME.match(text.strip())
    if clock is None:
        return text
    hour, minute, second = int(clock[1]), int(clock[2]), int(clock[3] or 0)
    if hour > 23 or minute > 59 or second > 59:
        raise click.BadParameter(f"{text!r} is not a time of day", param_hint="--at")
    now = now or datetime.now().astimezone()
    moment = now.replace(hour=hour, minute=minute, second=second, microsecond=0)
    return (moment if moment > now else moment + timedelta(days=1)).isoformat()


WHEN_OPTIONS = [
    click.option("--at", "at", metavar="TIME",
                 help="Start it at this time: 14:00 (the next one), or 2026-12-24T18:00 (local unless an offset "
                      "is given); until then it is waiting."),
    click.option("--in", "delay", metavar="DURATION",
                 help="Start it this long from now: 90s, 15m, 2h, 1d; until then it is waiting."),
    click.option("--after", "after", multiple=True, metavar="ID",
                 help="Start it once job ID is done (repeatable: all of them); if one fails or is cancelled, "
                      "so is this one."),
    click.option("--after-any", "after_any", is_flag=True,
                 help="With --after: once they have ended, whatever the outcome."),
]


def when_options(command: Any) -> Any:
    """When `pool submit` starts the job (`pool run` runs at once: it is the inline fallback)."""
    for option in reversed(WHEN_OPTIONS):
        command = option(command)
    return command


def build_job(spool: Spool, args: tuple[str, ...], is_command: bool, fallback: str | None, kwargs: tuple[str, ...],
              job_id: str | None, name: str | None, priority: int | None, group: str | None, retries: int | None,
              retry_delay: float | None, retry_backoff: float | None, timeout: float | None,
              meta: tuple[str, ...], cwd: str | None, env: tuple[str, ...], progress_form: str | None,
              on_finish: str | None = None, at: str | None = None, delay: str | None = None,
              after: tuple[str, ...] = (), after_any: bool = False, **resources: Any) -> Job:
    """Submit the job the command line describes. Raises InvalidJobSpec, click.UsageError."""
    doc = describe_job(args, is_command, kwargs, name, priority, group, retries, retry_delay, retry_backoff, timeout,
                       meta, cwd, env, progress_form, on_finish, **resources)
    doc.update({k: v for k, v in {"id": job_id, "at": moment_from(at) if at is not None else None,
                                  "delay": delay}.items() if v is not None})
    if after:
        doc["after"] = [spool.resolve(job_id) for job_id in after]  # a unique start of an id will do
    if after_any:
        if not after:
            raise click.UsageError("--after-any goes with --after")
        doc["after_policy"] = "finished"
    if is_command:
        return spool.submit_command(doc.pop("command"), fallback=fallback, **doc)
    return spool.submit(doc.pop("task"), *doc.pop("args"), kwargs=doc.pop("kwargs"), fallback=fallback, **doc)


def describe_job(args: tuple[str, ...], is_command: bool, kwargs: tuple[str, ...], name: str | None,
                 priority: int | None, group: str | None, retries: int | None, retry_delay: float | None,
                 retry_backoff: float | None, timeout: float | None, meta: tuple[str, ...], cwd: str | None,
                 env: tuple[str, ...], progress_form: str | None, on_finish: str | None = None,
                 memory: int | None = None, cpu_seconds: float | None = None, nice: int | None = None,
                 open_files: int | None = None, needs_memory: int | None = None,
                 needs_cpus: float | None = None) -> dict[str, Any]:
    """The job document the command line describes (what `pool submit` submits, and what
    `pool schedule add` fires). Raises click.UsageError."""
    doc: dict[str, Any] = {k: v for k, v in {
        "name": name, "priority": priority, "group": group, "retries": retries, "retry_delay": retry_delay,
        "retry_backoff": retry_backoff, "timeout": timeout}.items() if v is not None}
    limits = {k: v for k, v in {"memory": memory, "cpu_seconds": cpu_seconds, "nice": nice,
                                "open_files": open_files}.items() if v is not None}
    needs = {k: v for k, v in {"memory": needs_memory, "cpus": needs_cpus}.items() if v is not None}
    doc.update({k: v for k, v in {"limits": limits, "needs": needs}.items() if v})
    if meta:
        doc["meta"] = key_values(meta, "--meta")
    if on_finish is not None:
        try:
            doc["on_finish"] = shlex.split(on_finish)
        except ValueError as exc:
            raise click.BadParameter(f"{on_finish!r}: {exc}", param_hint="--on-finish") from None
    if is_command:
        if kwargs:
            raise click.UsageError("--kw applies to task jobs, not to commands")
        if cwd:
            doc["cwd"] = cwd
        if env:
            doc["env"] = key_values(env, "--env", parse=str)
        if progress_form:
            doc["progress"] = progress_form if progress_form in ("auto", "none") else {"regex": progress_form}
        return {"command": list(args), **doc}
    if cwd or env or progress_form:
        raise click.UsageError("--cwd, --env and --progress apply to command jobs")
    if TASK_PATTERN.match(args[0]) is None:
        raise click.UsageError(f"{args[0]!r} is not a task: a task is module:function (as mytasks:render); a "
                               f"program runs with --command first (pool submit --command {shlex.quote(args[0])} ...)")
    return {"task": args[0], "args": [json_or_text(a) for a in args[1:]], "kwargs": key_values(kwargs, "--kw"),
            **doc}
