"""The job records: what a user asks for (JobSpec) and what happened to it (JobStatus).

Pure: parsing and encoding only, no I/O. A status document on disk is the spec's keys
flattened together with the run's keys, so one file answers both "what is this job" and
"how is it doing", and a later manager can rebuild its queue from ``status/`` alone.
"""

from __future__ import annotations

import difflib
import enum
import json
import math
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import orjson

from .errors import InvalidJobSpec

SCHEMA = 1
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
TASK_PATTERN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*\Z")
MAX_RETRIES = 1000
INT64 = 2**63


class State(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({State.DONE, State.FAILED, State.CANCELLED})


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job as the user described it; immutable for the job's whole life."""

    id: str
    name: str
    task: str | None = None
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    command: tuple[str, ...] | None = None
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    progress: str | Mapping[str, Any] = "auto"
    priority: int = 0
    retries: int = 0
    retry_delay: float = 1.0
    retry_backoff: float = 2.0
    timeout: float | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    @property
    def kind(self) -> str:
        return "task" if self.task is not None else "command"

    def to_dict(self, progress_key: str = "progress") -> dict[str, Any]:
        """The job document; in a status document the progress *form* of a command job
        is stored as ``progress_from``, since ``progress`` there is the fraction done."""
        doc: dict[str, Any] = {"id": self.id, "name": self.name}
        if self.task is not None:
            doc.update(task=self.task, args=list(self.args), kwargs=dict(self.kwargs))
        else:
            doc.update(command=list(self.command or ()), cwd=self.cwd, env=dict(self.env))
            doc[progress_key] = self.progress
        doc.update(
            priority=self.priority,
            retries=self.retries,
            retry_delay=self.retry_delay,
            retry_backoff=self.retry_backoff,
            timeout=self.timeout,
            meta=dict(self.meta),
        )
        return doc

    @classmethod
    def from_status_doc(cls, doc: Mapping[str, Any]) -> JobSpec:
        command = doc.get("command")
        return cls(
            id=doc["id"],
            name=doc.get("name", ""),
            task=doc.get("task"),
            args=tuple(doc.get("args") or ()),
            kwargs=doc.get("kwargs") or {},
            command=tuple(command) if command is not None else None,
            cwd=doc.get("cwd"),
            env=doc.get("env") or {},
            progress=doc.get("progress_from", "auto"),
            priority=doc.get("priority", 0),
            retries=doc.get("retries", 0),
            retry_delay=doc.get("retry_delay", 1.0),
            retry_backoff=doc.get("retry_backoff", 2.0),
            timeout=doc.get("timeout"),
            meta=doc.get("meta") or {},
        )


@dataclass(frozen=True, slots=True)
class JobStatus:
    """The live record of one job: its spec plus everything that happened to it."""

    spec: JobSpec
    state: State
    created_at: str
    updated_at: str
    attempt: int = 1
    progress: float | None = None
    message: str | None = None
    pid: int | None = None
    pid_started: int | None = None  # the process start time, so a reused pid is not mistaken
    started_at: str | None = None
    finished_at: str | None = None
    next_try_at: str | None = None
    exit_code: int | None = None
    result: Any = None
    error: Mapping[str, Any] | None = None

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def max_attempts(self) -> int:
        return self.spec.max_attempts

    @property
    def log(self) -> str:
        return f"logs/{self.spec.id}.log"

    def to_dict(self) -> dict[str, Any]:
        doc = self.spec.to_dict(progress_key="progress_from")
        doc.update(
            schema=SCHEMA,
            state=self.state.value,
            progress=self.progress,
            message=self.message,
            attempt=self.attempt,
            max_attempts=self.max_attempts,
            pid=self.pid,
            pid_started=self.pid_started,
            created_at=self.created_at,
            started_at=self.started_at,
            updated_at=self.updated_at,
            finished_at=self.finished_at,
            next_try_at=self.next_try_at,
            exit_code=self.exit_code,
            result=self.result,
            error=self.error,
            log=self.log,
        )
        return doc

    def encode(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> JobStatus:
        """Rebuild a status from a document pool wrote (trusted: not validated again)."""
        return cls(
            spec=JobSpec.from_status_doc(doc),
            state=State(doc["state"]),
            created_at=doc["created_at"],
            updated_at=doc["updated_at"],
            attempt=doc.get("attempt", 1),
            progress=doc.get("progress"),
            message=doc.get("message"),
            pid=doc.get("pid"),
            pid_started=doc.get("pid_started"),
            started_at=doc.get("started_at"),
            finished_at=doc.get("finished_at"),
            next_try_at=doc.get("next_try_at"),
            exit_code=doc.get("exit_code"),
            result=doc.get("result"),
            error=doc.get("error"),
        )

    @classmethod
    def decode(cls, data: bytes) -> JobStatus:
        return cls.from_dict(orjson.loads(data))


def new_status(spec: JobSpec, now: str) -> JobStatus:
    return JobStatus(spec=spec, state=State.QUEUED, created_at=now, updated_at=now)


def utc_now() -> str:
    """Wall-clock time for display and the status file (deadlines use time.monotonic)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def new_job_id() -> str:
    # 48 random bits: a spool of 100,000 jobs has about a 1 in 50,000 chance of one clash,
    # and a clash is caught (duplicate ids are refused), never silently merged.
    return secrets.token_hex(6)


# ---------------------------------------------------------------- parsing a job file

def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)  # type: ignore[arg-type]


def _check(ok: bool, where: str, key: str, expected: str, value: object) -> None:
    if not ok:
        try:
            shown = orjson.dumps(value).decode()
        except TypeError:  # an integer beyond 64 bits
            shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise InvalidJobSpec(f"{where}: '{key}' must be {expected}, got {shown}")


def _str_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _progress_form(value: object) -> bool:
    if value in ("auto", "none"):
        return True
    if not isinstance(value, dict) or not isinstance(value.get("regex"), str):
        return False
    if set(value) - {"regex", "total"}:
        return False
    total = value.get("total")
    return total is None or (_is_number(total) and total > 0)


# key -> (check, what the message says it must be)
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "id": (lambda v: isinstance(v, str) and ID_PATTERN.match(v) is not None,
           "1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit"),
    "name": (lambda v: isinstance(v, str) and len(v) <= 200, "a string of at most 200 characters"),
    "task": (lambda v: isinstance(v, str) and TASK_PATTERN.match(v) is not None,
             "a string 'module:function'"),
    "args": (lambda v: isinstance(v, list), "a list"),
    "kwargs": (lambda v: isinstance(v, dict), "an object"),
    "command": (lambda v: isinstance(v, list) and len(v) > 0 and v[0] != ""
                and all(isinstance(a, str) and "\0" not in a for a in v),
                "a non-empty list of strings (the program's argv)"),
    "cwd": (lambda v: v is None or (isinstance(v, str) and v != "" and "\0" not in v), "a directory path or null"),
    "env": (lambda v: _str_map(v) and all(k and "=" not in k and "\0" not in k + val for k, val in v.items()),
            "an object of string names to string values"),
    "progress": (_progress_form, "'auto', 'none' or {\"regex\": \"...\", \"total\": N}"),
    "priority": (lambda v: _is_int(v) and -INT64 <= v < INT64, "an integer"),
    "retries": (lambda v: _is_int(v) and 0 <= v <= MAX_RETRIES, f"an integer from 0 to {MAX_RETRIES}"),
    "retry_delay": (lambda v: _is_number(v) and v >= 0, "a number of seconds >= 0"),
    "retry_backoff": (lambda v: _is_number(v) and v >= 1, "a number >= 1"),
    "timeout": (lambda v: v is None or (_is_number(v) and v > 0), "a number of seconds > 0, or null"),
    "meta": (lambda v: isinstance(v, dict), "an object"),
}
SPEC_KEYS = tuple(_RULES)
TASK_ONLY = ("args", "kwargs")
COMMAND_ONLY = ("cwd", "env", "progress")


def parse_job(
    doc: object,
    where: str,
    default_name: str,
    new_id: Callable[[], str] = new_job_id,
) -> JobSpec:
    """Validate one job object and return its spec.

    ``where`` names the source in every message (``"x.json"``, ``"x.jsonl line 3"``).
    Raises InvalidJobSpec naming the field at fault.
    """
    if not isinstance(doc, dict):
        raise InvalidJobSpec(f"{where}: a job must be a JSON object, got {type(doc).__name__}")
    if isinstance(doc.get("id"), str):
        where = f"job {doc['id']!r} in {where}"
    for key in doc:
        if key not in _RULES:
            hint = difflib.get_close_matches(str(key), SPEC_KEYS, n=1)
            tip = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise InvalidJobSpec(f"{where}: unknown key {str(key)!r}{tip}")
    for key, value in doc.items():
        check, expected = _RULES[key]
        _check(check(value), where, key, expected, value)
    has_task, has_command = "task" in doc, "command" in doc
    if has_task == has_command:
        which = "both" if has_task else "neither"
        raise InvalidJobSpec(f"{where}: a job needs exactly one of 'task' and 'command', got {which}")
    wrong = [k for k in (COMMAND_ONLY if has_task else TASK_ONLY) if k in doc]
    if wrong:
        kind = "task" if has_task else "command"
        raise InvalidJobSpec(f"{where}: '{wrong[0]}' does not apply to a {kind} job")
    command = doc.get("command")
    return JobSpec(
        id=doc["id"] if "id" in doc else new_id(),
        name=doc.get("name") or default_name,
        task=doc.get("task"),
        args=tuple(doc.get("args", ())),
        kwargs=doc.get("kwargs", {}),
        command=tuple(command) if command is not None else None,
        cwd=doc.get("cwd"),
        env=doc.get("env", {}),
        progress=doc.get("progress", "auto"),
        priority=doc.get("priority", 0),
        retries=doc.get("retries", 0),
        retry_delay=float(doc.get("retry_delay", 1.0)),
        retry_backoff=float(doc.get("retry_backoff", 2.0)),
        timeout=float(doc["timeout"]) if doc.get("timeout") is not None else None,
        meta=doc.get("meta", {}),
    )


_LONG_DIGIT_RUN = re.compile(rb"\d{19}")


def _loads(data: bytes, where: str) -> object:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidJobSpec(f"{where}: not valid JSON: {exc}") from None
    if _LONG_DIGIT_RUN.search(data):
        # orjson turns integers beyond 64 bits into floats, silently losing digits;
        # only when a long digit run is present, re-read exactly to catch them.
        json.loads(data, parse_int=lambda text: _int64(text, where))
    return doc


def _int64(text: str, where: str) -> int:
    value = int(text)
    if not -INT64 <= value < 2 * INT64:
        raise InvalidJobSpec(f"{where}: the integer {text[:24]}{'...' if len(text) > 24 else ''} "
                             "does not fit in 64 bits")
    return value


def parse_job_file(data: bytes, filename: str, id_base: str) -> list[JobSpec]:
    """Parse a whole ``.json`` (one job) or ``.jsonl`` (one job a line) file.

    Jobs without an id get ``id_base`` (``.json``) or ``id_base-N`` (line N of a
    ``.jsonl``): deterministic, so parsing the same claimed file again after a crash
    yields the same ids. A ``.jsonl`` file is accepted whole or rejected whole.
    """
    stem = filename.rsplit(".", 1)[0]
    if not data.strip():
        raise InvalidJobSpec(f"{filename}: the file is empty")
    if data.startswith(b"\xef\xbb\xbf"):
        raise InvalidJobSpec(f"{filename}: the file starts with a byte-order mark; save it as UTF-8 without BOM")
    if not filename.endswith(".jsonl"):
        return [parse_job(_loads(data, filename), filename, stem, lambda: id_base)]
    specs: list[JobSpec] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"{filename} line {number}"
        spec = parse_job(_loads(line, where), where, stem, lambda: f"{id_base}-{number}")
        if spec.id in seen:
            raise InvalidJobSpec(f"{where}: duplicate id {spec.id!r} (also on line {seen[spec.id]})")
        seen[spec.id] = number
        specs.append(spec)
    return specs
