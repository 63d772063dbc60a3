"""The job records: what a user asks for (JobSpec) and what happened to it (JobStatus).

Pure: parsing and encoding only, no I/O. A status document on disk is the spec's keys
flattened together with the run's keys, so one file answers both "what is this job" and
"how is it doing", and a later manager can rebuild its queue from ``status/`` alone.

Every key is described once, in the ``metadata`` of its dataclass field (its check, what
the message says it must be, which kind of job it applies to): parsing a job file,
encoding a status and decoding one strictly all read that table, so a new key is one
field with its rule.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from .errors import CorruptStatus
from .limits import Limits, Needs, limits_problem, needs_problem
from .rules import (
    MAX_NESTING,
    MAX_SECONDS,
    Rule,
    as_float,
    checked,
    decoded,
    env_map,
    int64,
    is_delay,
    is_error_info,
    is_int,
    is_moment,
    is_number,
    is_time,
    list_or_none,
    nesting_depth,
    optional,
    parse_duration,
    progress_form,
    progress_problem,
    rule,
    seconds,
    shallow,
    text,
    tuple_or_none,
    utc_moment,
)
from .usage import Usage, is_usage

SCHEMA = 1
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
GROUP_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}\Z")
DEFAULT_GROUP = "default"  # the jobs that name no group (`pool pause --group default`)
TASK_PATTERN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*\Z")
MAX_RETRIES = 1000
MAX_AFTER = 1000  # dependencies of one job
AFTER_POLICIES = ("done", "finished")
MAX_BACKOFF = 1000.0


class State(str, enum.Enum):
    WAITING = "waiting"  # not yet eligible to start: ``JobStatus.waits`` says for what
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"  # its attempt's processes stopped (SIGSTOP) by `pool pause`, until resumed
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({State.DONE, State.FAILED, State.CANCELLED})
UNDER_WAY = frozenset({State.RUNNING, State.PAUSED})  # an attempt began and has not ended
_STATE_VALUES = frozenset(s.value for s in State)


class Empty(Mapping[str, Any]):
    """The mapping of a job that sets none (no kwargs, env or meta): one, shared by every
    job, where a dict each took 64 bytes a queued job (a million queued jobs: 190 MB)."""

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Any:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __hash__(self) -> int:  # immutable: fit for a default value
        return 0

    def __repr__(self) -> str:
        return "{}"


EMPTY = Empty()


@dataclass(frozen=True, slots=True)
class KeptEnv:
    """A job's environment as a status document keeps it: its names; its values are kept
    apart (``SpoolDir.keep_env``), for the attempt that runs the command."""

    names: tuple[str, ...]


class AttachedEnv(dict[str, str]):
    """Environment values read back from where they were kept apart (not to be kept again)."""


def env_names(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(n, str) and n and "=" not in n for n in value)


def kept_env(value: Any) -> Any:
    """A status document's environment: names (kept apart), or, in a document written
    before they were kept apart, the values themselves."""
    if isinstance(value, list):
        return KeptEnv(tuple(value))
    return value


def names_of(value: Any) -> Any:
    if value is None:
        return None
    return sorted(value.names if isinstance(value, KeptEnv) else value)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job as the user described it; immutable for the job's whole life."""

    id: str = field(metadata=rule(
        lambda v: isinstance(v, str) and ID_PATTERN.match(v) is not None,
        "1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit"))
    name: str = field(default="", metadata=rule(
        lambda v: isinstance(v, str) and len(v) <= 200, "a string of at most 200 characters"))
    task: str | None = field(default=None, metadata=rule(
        lambda v: isinstance(v, str) and TASK_PATTERN.match(v) is not None, "a string 'module:function'",
        only="task"))
    args: tuple[Any, ...] = field(default=(), metadata=rule(
        shallow(lambda v: isinstance(v, list)), f"a list nested at most {MAX_NESTING} levels deep",
        only="task", decode=tuple, encode=list))
    kwargs: Mapping[str, Any] = field(default=EMPTY, metadata=rule(
        shallow(lambda v: isinstance(v, dict)), f"an object nested at most {MAX_NESTING} levels deep",
        only="task", encode=dict))
    command: tuple[str, ...] | None = field(default=None, metadata=rule(
        lambda v: isinstance(v, list) and len(v) > 0 and v[0] != "" and all(isinstance(a, str) and "\0" not in a
                                                                           for a in v),
        "a non-empty list of strings (the program's argv)", only="command",
        decode=tuple_or_none, encode=list_or_none))
    cwd: str | None = field(default=None, metadata=rule(
        lambda v: v is None or (isinstance(v, str) and v != "" and "\0" not in v), "a directory path or null",
        only="command"))
    env: Mapping[str, str] = field(default=EMPTY, metadata=rule(
        env_map, "an object of string names to string values", only="command", encode=dict))
    # The submitter's environment, as `pool submit`/`pool run` and the Python client capture
    # it: the command sees it instead of the manager's (with `env` on top), as it would have
    # under subprocess.run where it was submitted. A job file dropped by hand has none. It
    # may hold secrets: a status document, which the group of a shared spool reads, keeps
    # its names only; its values are kept in status/<id>.env, which only the manager's user
    # reads (pool/spool.py), and handed to the attempt that runs the command.
    caller_env: Mapping[str, str] | KeptEnv | None = field(default=None, metadata=rule(
        lambda v: v is None or env_map(v), "an object of string names to string values, or null",
        only="command", encode=lambda v: dict(v) if isinstance(v, Mapping) else None,
        in_status=Rule(lambda v: v is None or env_map(v) or env_names(v), "a list of names, or null",
                       decode=kept_env, encode=names_of)))
    progress: str | Mapping[str, Any] = field(default="auto", metadata=rule(
        progress_form, "'auto', 'none' or {\"regex\": \"...\", \"total\": N} (a regex with one group)",
        only="command", status_key="progress_from", explain=progress_problem))
    priority: int = field(default=0, metadata=rule(int64, "an integer"))
    retries: int = field(default=0, metadata=rule(
        lambda v: is_int(v) and 0 <= v <= MAX_RETRIES, f"an integer from 0 to {MAX_RETRIES}"))
    retry_delay: float = field(default=1.0, metadata=rule(
        seconds, f"a number of seconds from 0 to {MAX_SECONDS:.0f} (a year)", decode=float))
    retry_backoff: float = field(default=2.0, metadata=rule(
        lambda v: is_number(v) and 1 <= v <= MAX_BACKOFF, f"a number from 1 to {MAX_BACKOFF:g}", decode=float))
    timeout: float | None = field(default=None, metadata=rule(
        lambda v: v is None or seconds(v, open_low=True),
        f"a number of seconds > 0 and at most {MAX_SECONDS:.0f} (a year), or null", decode=as_float))
    # Not before this time (`at`), or this long after it was submitted (`delay`): until
    # then the job is waiting (``JobStatus.waits``).
    at: str | None = field(default=None, metadata=rule(
        optional(is_moment), "a time like 2026-12-05T14:00:00 (ISO 8601; with no offset, the local time) "
        "from the year 2000 to a year from now, or null", decode=lambda v: utc_moment(v) if v is not None else None))
    delay: float | None = field(default=None, metadata=rule(
        optional(is_delay), "seconds, or a duration like 90s, 15m, 2h, 1d, at most a year, or null",
        decode=lambda v: parse_duration(v) if v is not None else None))
    # Not before these jobs have ended: done (`after_policy` "done"), or any way ("finished").
    # Until then it is waiting; a dependency that fails or is cancelled cancels it.
    after: tuple[str, ...] = field(default=(), metadata=rule(
        lambda v: isinstance(v, list) and len(v) <= MAX_AFTER and all(
            isinstance(i, str) and ID_PATTERN.match(i) is not None for i in v),
        f"a list of at most {MAX_AFTER} job ids", decode=lambda v: tuple(dict.fromkeys(v)), encode=list))
    after_policy: str = field(default="done", metadata=rule(
        lambda v: v in AFTER_POLICIES, "'done' (every dependency done) or 'finished' (ended, whatever the outcome)"))
    # When it was submitted (pool and its client say; for a file dropped by hand, its
    # modification time): jobs of one priority start in this order, and it is their
    # created_at. ISO 8601 UTC with microseconds, as every time pool writes.
    submitted_at: str | None = field(default=None, metadata=rule(
        lambda v: v is None or is_time(v),
        "a time like 2026-11-29T13:26:33.000000Z, or null"))
    # Run once each time the job ends (its final status on stdin), after the manager's own
    # --on-finish hook: a command, so only a manager that allows commands takes the job.
    on_finish: tuple[str, ...] | None = field(default=None, metadata=rule(
        lambda v: v is None or (isinstance(v, list) and len(v) > 0 and v[0] != "" and all(
            isinstance(a, str) and "\0" not in a for a in v)),
        "a non-empty list of strings (a program's argv), or null", decode=tuple_or_none, encode=list_or_none))
    # Jobs of one group run at most its `parallel` at a time (groups/<name>.json, pool/groups.py).
    group: str | None = field(default=None, metadata=rule(
        lambda v: v is None or (isinstance(v, str) and GROUP_PATTERN.match(v) is not None),
        "a group name (1-40 letters, digits, '_' or '-', starting with a letter or digit), or null"))
    # What an attempt may use (the kernel stops it past that) and what the job needs while
    # it runs (the manager starts it only while it fits): pool/limits.py.
    limits: Limits | None = field(default=None, metadata=rule(
        lambda v: v is None or limits_problem(v) is None,
        'null or {"memory": a size like "2G", "cpu_seconds": N, "nice": 0-19, "open_files": N}',
        explain=lambda v: limits_problem(v) if v is not None else None,
        decode=lambda v: Limits.from_dict(v) if v is not None else None,
        encode=lambda v: v.to_dict() if v is not None else None))
    needs: Needs | None = field(default=None, metadata=rule(
        lambda v: v is None or needs_problem(v) is None, 'null or {"memory": a size like "4G", "cpus": N}',
        explain=lambda v: needs_problem(v) if v is not None else None,
        decode=lambda v: Needs.from_dict(v) if v is not None else None,
        encode=lambda v: v.to_dict() if v is not None else None))
    meta: Mapping[str, Any] = field(default=EMPTY, metadata=rule(
        shallow(lambda v: isinstance(v, dict)), f"an object nested at most {MAX_NESTING} levels deep",
        encode=dict))

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    @property
    def queue_group(self) -> str:
        """The group whose limit and pause it obeys: the ``default`` group when it names none."""
        return self.group or DEFAULT_GROUP

    @property
    def kind(self) -> str:
        return "task" if self.task is not None else "command"

    def to_dict(self, in_status: bool = False) -> dict[str, Any]:
        """The job document. In a status document the progress *form* of a command job
        is stored as ``progress_from``, since ``progress`` there is the fraction done."""
        doc: dict[str, Any] = {}
        for f, spec_rule in SPEC_FIELDS:
            if spec_rule.only is not None and spec_rule.only != self.kind:
                continue
            value = getattr(self, f.name)
            key = spec_rule.status_key if in_status and spec_rule.status_key else f.name
            encoding = spec_rule.in_status if in_status and spec_rule.in_status else spec_rule
            doc[key] = encoding.encode(value) if encoding.encode else value
        return doc


SPEC_FIELDS: tuple[tuple[dataclasses.Field[Any], Rule], ...] = tuple(
    (f, f.metadata["rule"]) for f in dataclasses.fields(JobSpec))
RULES: dict[str, Rule] = {f.name: r for f, r in SPEC_FIELDS}
SPEC_KEYS = tuple(RULES)


def is_waits(v: object) -> bool:
    if not isinstance(v, dict) or not v or not set(v) <= {"until", "after", "paused"}:
        return False
    if "paused" in v and v["paused"] is not True:
        return False
    after = v.get("after", [])
    return ("until" not in v or is_time(v["until"])) and isinstance(after, list) and len(after) <= MAX_AFTER and all(
        isinstance(i, str) and ID_PATTERN.match(i) is not None for i in after)


@dataclass(frozen=True, slots=True)
class JobStatus:
    """The live record of one job: its spec plus everything that happened to it."""

    spec: JobSpec
    state: State = field(metadata=rule(lambda v: v in _STATE_VALUES, "a state name", decode=State,
                                       encode=lambda s: s.value))
    created_at: str = field(metadata=rule(is_time, "a time"))
    updated_at: str = field(metadata=rule(is_time, "a time"))
    attempt: int = field(default=1, metadata=rule(lambda v: is_int(v) and 1 <= v <= 10 * MAX_RETRIES,
                                                  "an attempt number"))
    progress: float | None = field(default=None, metadata=rule(
        optional(lambda v: is_number(v) and 0 <= v <= 1), "a fraction from 0 to 1, or null", decode=as_float))
    message: str | None = field(default=None, metadata=rule(optional(text), "a string or null"))
    pid: int | None = field(default=None, metadata=rule(optional(lambda v: is_int(v) and 0 < v < 2**31),
                                                        "a process id or null"))
    # The process start time, so a reused pid is not mistaken for the job's process.
    pid_started: int | None = field(default=None, metadata=rule(optional(int64), "an integer or null"))
    started_at: str | None = field(default=None, metadata=rule(optional(is_time), "a time or null"))
    finished_at: str | None = field(default=None, metadata=rule(optional(is_time), "a time or null"))
    next_try_at: str | None = field(default=None, metadata=rule(optional(is_time), "a time or null"))
    exit_code: int | None = field(default=None, metadata=rule(optional(int64), "an integer or null"))
    result: Any = field(default=None, metadata=rule(lambda v: nesting_depth(v) <= MAX_NESTING, "JSON"))
    error: Mapping[str, Any] | None = field(default=None, metadata=rule(
        optional(is_error_info), "null or {\"type\", \"message\", \"traceback\"}"))
    # What a waiting job waits for: {"until": time} (its `at`, or its submission plus
    # its `delay`), {"after": [ids]} (its `after`), {"paused": true} (`pool pause` of a job
    # not started: held until resumed), or several; null in every other state.
    waits: Mapping[str, Any] | None = field(default=None, metadata=rule(
        optional(is_waits), "null or {\"until\": a time, \"after\": [job ids], \"paused\": true} (any of them)",
        encode=lambda v: dict(v) if v is not None else None))
    # Graceful stops of the manager that put this attempt back uncounted (bounded).
    interruptions: int = field(default=0, metadata=rule(lambda v: is_int(v) and 0 <= v <= 1000, "a count"))
    # What the last attempt that ended in its runner used (pool/usage.py): null before one
    # did, and while one runs.
    usage: Usage | None = field(default=None, metadata=rule(
        optional(is_usage), 'null or {"wall", "user", "system", "max_rss"}',
        decode=lambda u: Usage.from_dict(u) if u is not None else None,
        encode=lambda u: u.to_dict() if u is not None else None))
    # The uid whose file submitted the job: in a shared spool, who may kill or retry it.
    submitter: int | None = field(default=None, metadata=rule(optional(lambda v: is_int(v) and 0 <= v < 2**32),
                                                              "a uid or null"))
    # The machine its attempt runs (or last ran) on, by its `pool worker --name`: null for
    # an attempt of this machine's own workers.
    host: str | None = field(default=None, metadata=rule(optional(lambda v: text(v) and 0 < len(v) <= 200),
                                                         "a worker's name or null"))
    # That attempt's token at the hub's broker (--engine celery): a new hub takes it over
    # by it. It grants nothing without the broker's password.
    token: str | None = field(default=None, metadata=rule(optional(lambda v: text(v) and len(v) <= 64),
                                                          "a token or null"))

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def max_attempts(self) -> int:
        return self.spec.max_attempts

    @property
    def log(self) -> str:
        return f"logs/{self.spec.id}.log"

    @property
    def error_text(self) -> str:
        """``Type: message`` of the error it holds ("" for none)."""
        return f"{self.error.get('type')}: {self.error.get('message')}" if self.error else ""

    def to_dict(self) -> dict[str, Any]:
        doc = self.spec.to_dict(in_status=True)
        doc["schema"] = SCHEMA
        for f, run_rule in RUN_FIELDS:
            value = getattr(self, f.name)
            doc[f.name] = run_rule.encode(value) if run_rule.encode else value
        doc["max_attempts"] = self.max_attempts
        doc["log"] = self.log
        return doc

    def encode(self) -> bytes:
        return encode_json(self.to_dict())

    @classmethod
    def from_dict(cls, doc: object, where: str = "status document", trusted: bool = False) -> JobStatus:
        """Rebuild a status from its document, checking every key it relies on: a status
        file is input like any other (another program, a partial restore, a hostile
        user may have written it). Raises CorruptStatus naming what is wrong.
        ``trusted``: a document pool itself encoded a moment ago (a manager's message to
        its worker), not checked again."""
        if not isinstance(doc, dict):
            raise CorruptStatus(f"{where}: not a JSON object")
        if doc.get("schema", SCHEMA) != SCHEMA:
            raise CorruptStatus(f"{where}: schema {doc.get('schema')!r} is not {SCHEMA}")
        kind = "task" if doc.get("task") is not None else "command"
        spec_values = _decode_fields(doc, _SPEC_PLANS[kind], where, trusted)
        return cls(spec=JobSpec(**spec_values), **_decode_fields(doc, _RUN_PLAN, where, trusted))

    @classmethod
    def decode(cls, data: bytes, where: str = "status document") -> JobStatus:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise CorruptStatus(f"{where}: not valid JSON: {exc}") from None
        return cls.from_dict(doc, where)


RUN_FIELDS: tuple[tuple[dataclasses.Field[Any], Rule], ...] = tuple(
    (f, f.metadata["rule"]) for f in dataclasses.fields(JobStatus) if "rule" in f.metadata)


# (field, its key in a status document, its rule, whether a document must have it): the
# field table, read once, in the form a strict decode of every status wants.
_Plan = tuple[tuple[str, str, Rule, bool], ...]
_SPEC_PLANS: dict[str, _Plan] = {
    kind: tuple((f.name, r.status_key or f.name, r.in_status or r, f.name in ("id", kind))
                for f, r in SPEC_FIELDS if r.only in (None, kind))
    for kind in ("task", "command")
}
_RUN_PLAN: _Plan = tuple((f.name, f.name, r, f.default is dataclasses.MISSING) for f, r in RUN_FIELDS)


def _decode_fields(doc: dict[str, Any], plan: _Plan, where: str, trusted: bool) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, key, field_rule, required in plan:
        if key in doc:
            values[name] = decoded(field_rule, doc[key]) if trusted else checked(doc[key], field_rule, where, key)
        elif required:
            raise CorruptStatus(f"{where}: '{key}' is missing")
    return values


def new_status(spec: JobSpec, now: str, submitter: int | None = None) -> JobStatus:
    """A job as it is taken in (``now``: its submission time): queued, or waiting (for
    its time still to come, for the jobs it comes after)."""
    waits = waits_of(spec, now)
    return JobStatus(spec=spec, state=State.WAITING if waits else State.QUEUED, created_at=now, updated_at=now,
                     submitter=submitter, waits=waits)


def waits_of(spec: JobSpec, created_at: str) -> dict[str, Any] | None:
    """What a job waits for before it may start (None: nothing)."""
    waits: dict[str, Any] = {}
    until = start_time(spec, created_at)
    if until is not None and until > parse_time(utc_now()):
        waits["until"] = iso_time(until)
    if spec.after:
        waits["after"] = list(spec.after)
    return waits or None


def start_time(spec: JobSpec, created_at: str) -> datetime | None:
    """When the job may start at the earliest: its ``at``, or its ``delay`` after
    ``created_at``; None when it may start at once."""
    if spec.at is not None:
        return parse_time(spec.at)
    if spec.delay:
        return parse_time(created_at) + timedelta(seconds=spec.delay)
    return None


# ---------------------------------------------------------------- JSON that always encodes

def encode_json(doc: object) -> bytes:
    """orjson, except that text it cannot encode (lone surrogates: a file name from
    ``os.listdir`` that is not UTF-8, say) is written with '?' in their place, rather
    than failing the job that reported it. Raises ValueError for nesting too deep."""
    try:
        return orjson.dumps(doc)
    except TypeError:
        pass
    try:
        return orjson.dumps(_replace_surrogates(doc))
    except TypeError as exc:
        raise ValueError(f"cannot encode as JSON: {exc}") from None


def _replace_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, (list, tuple)):
        return [_replace_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------- time and ids

def utc_now() -> str:
    """Wall-clock time for display and the status file (deadlines use time.monotonic)."""
    return iso_time(datetime.now(timezone.utc))


def iso_time(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def new_job_id() -> str:
    # 48 random bits: a spool of 100,000 jobs has about a 1 in 50,000 chance of one clash,
    # and a clash is caught (duplicate ids are refused), never silently merged.
    # os.urandom is what secrets.token_hex reads, without the import of secrets (hmac,
    # hashlib, random), which every command line would pay for (benchmarks/cli_start.py).
    return os.urandom(6).hex()
