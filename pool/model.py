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
import difflib
import enum
import functools
import json
import math
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from .errors import CorruptStatus, InvalidJobSpec

SCHEMA = 1
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
TASK_PATTERN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*\Z")
MAX_RETRIES = 1000
INT64 = 2**63
# A year: a retry delay or timeout beyond it is a mistake, and datetime arithmetic on
# 1e15 seconds overflows (a job with "retry_delay": 1e15 once re-ran thousands of times).
MAX_SECONDS = 365 * 24 * 3600.0
MAX_BACKOFF = 1000.0
# orjson reads 1,024 levels but writes only ~254, and a status document nests a job's
# values one level deeper than its file did: anything deeper than this is refused.
MAX_NESTING = 64


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
_STATE_VALUES = frozenset(s.value for s in State)


# ---------------------------------------------------------------- value checks

def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)  # type: ignore[arg-type]


def _int64(value: object) -> bool:
    return _is_int(value) and -INT64 <= value < INT64  # type: ignore[operator]


def _seconds(value: object, low: float = 0.0, open_low: bool = False) -> bool:
    return _is_number(value) and (value > low if open_low else value >= low) and value <= MAX_SECONDS  # type: ignore[operator]


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


def nesting_depth(value: object, limit: int = MAX_NESTING) -> int:
    """How deeply lists and objects nest in ``value`` (a scalar is 0), counting no
    further than ``limit + 1``. Iterative: Python's own recursion limit is no bound."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, tuple)):
            children: Any = item
        elif isinstance(item, dict):
            children = item.values()
        else:
            continue
        depth += 1
        if depth > limit:
            return depth
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


def _shallow(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: check(v) and nesting_depth(v) <= MAX_NESTING


@dataclass(frozen=True, slots=True)
class Rule:
    """How one key of a job file is checked, and how it maps to its dataclass field."""

    check: Callable[[Any], bool]
    expected: str
    only: str | None = None  # "task" or "command": the kind of job the key applies to
    status_key: str | None = None  # its key in a status document, when not its own name
    decode: Callable[[Any], Any] | None = None  # document value -> field value
    encode: Callable[[Any], Any] | None = None  # field value -> document value


def rule(check: Callable[[Any], bool], expected: str, **options: Any) -> dict[str, Rule]:
    return {"rule": Rule(check, expected, **options)}


def _as_float(value: Any) -> Any:
    return float(value) if value is not None else None


def _tuple_or_none(value: Any) -> Any:
    return tuple(value) if value is not None else None


def _list_or_none(value: Any) -> Any:
    return list(value) if value is not None else None


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
        _shallow(lambda v: isinstance(v, list)), f"a list nested at most {MAX_NESTING} levels deep",
        only="task", decode=tuple, encode=list))
    kwargs: Mapping[str, Any] = field(default_factory=dict, metadata=rule(
        _shallow(lambda v: isinstance(v, dict)), f"an object nested at most {MAX_NESTING} levels deep",
        only="task", encode=dict))
    command: tuple[str, ...] | None = field(default=None, metadata=rule(
        lambda v: isinstance(v, list) and len(v) > 0 and v[0] != "" and all(isinstance(a, str) and "\0" not in a
                                                                           for a in v),
        "a non-empty list of strings (the program's argv)", only="command",
        decode=_tuple_or_none, encode=_list_or_none))
    cwd: str | None = field(default=None, metadata=rule(
        lambda v: v is None or (isinstance(v, str) and v != "" and "\0" not in v), "a directory path or null",
        only="command"))
    env: Mapping[str, str] = field(default_factory=dict, metadata=rule(
        lambda v: _str_map(v) and all(k and "=" not in k and "\0" not in k + val for k, val in v.items()),
        "an object of string names to string values", only="command", encode=dict))
    progress: str | Mapping[str, Any] = field(default="auto", metadata=rule(
        _progress_form, "'auto', 'none' or {\"regex\": \"...\", \"total\": N}", only="command",
        status_key="progress_from"))
    priority: int = field(default=0, metadata=rule(_int64, "an integer"))
    retries: int = field(default=0, metadata=rule(
        lambda v: _is_int(v) and 0 <= v <= MAX_RETRIES, f"an integer from 0 to {MAX_RETRIES}"))
    retry_delay: float = field(default=1.0, metadata=rule(
        _seconds, f"a number of seconds from 0 to {MAX_SECONDS:.0f} (a year)", decode=float))
    retry_backoff: float = field(default=2.0, metadata=rule(
        lambda v: _is_number(v) and 1 <= v <= MAX_BACKOFF, f"a number from 1 to {MAX_BACKOFF:g}", decode=float))
    timeout: float | None = field(default=None, metadata=rule(
        lambda v: v is None or _seconds(v, open_low=True),
        f"a number of seconds > 0 and at most {MAX_SECONDS:.0f} (a year), or null", decode=_as_float))
    meta: Mapping[str, Any] = field(default_factory=dict, metadata=rule(
        _shallow(lambda v: isinstance(v, dict)), f"an object nested at most {MAX_NESTING} levels deep",
        encode=dict))

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

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
            doc[key] = spec_rule.encode(value) if spec_rule.encode else value
        return doc


SPEC_FIELDS: tuple[tuple[dataclasses.Field[Any], Rule], ...] = tuple(
    (f, f.metadata["rule"]) for f in dataclasses.fields(JobSpec))
RULES: dict[str, Rule] = {f.name: r for f, r in SPEC_FIELDS}
SPEC_KEYS = tuple(RULES)


# ---------------------------------------------------------------- the run's own fields

def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _text(v: object) -> bool:
    return isinstance(v, str)


def _error_record(v: object) -> bool:
    return (isinstance(v, dict) and isinstance(v.get("type"), str) and isinstance(v.get("message"), str)
            and (v.get("traceback") is None or isinstance(v.get("traceback"), str)))


@dataclass(frozen=True, slots=True)
class JobStatus:
    """The live record of one job: its spec plus everything that happened to it."""

    spec: JobSpec
    state: State = field(metadata=rule(lambda v: v in _STATE_VALUES, "a state name", decode=State,
                                       encode=lambda s: s.value))
    created_at: str = field(metadata=rule(_text, "a time"))
    updated_at: str = field(metadata=rule(_text, "a time"))
    attempt: int = field(default=1, metadata=rule(lambda v: _is_int(v) and 1 <= v <= 10 * MAX_RETRIES,
                                                  "an attempt number"))
    progress: float | None = field(default=None, metadata=rule(
        _optional(lambda v: _is_number(v) and 0 <= v <= 1), "a fraction from 0 to 1, or null", decode=_as_float))
    message: str | None = field(default=None, metadata=rule(_optional(_text), "a string or null"))
    pid: int | None = field(default=None, metadata=rule(_optional(lambda v: _is_int(v) and 0 < v < 2**31),
                                                        "a process id or null"))
    # The process start time, so a reused pid is not mistaken for the job's process.
    pid_started: int | None = field(default=None, metadata=rule(_optional(_int64), "an integer or null"))
    started_at: str | None = field(default=None, metadata=rule(_optional(_text), "a time or null"))
    finished_at: str | None = field(default=None, metadata=rule(_optional(_text), "a time or null"))
    next_try_at: str | None = field(default=None, metadata=rule(_optional(_text), "a time or null"))
    exit_code: int | None = field(default=None, metadata=rule(_optional(_int64), "an integer or null"))
    result: Any = field(default=None, metadata=rule(lambda v: nesting_depth(v) <= MAX_NESTING, "JSON"))
    error: Mapping[str, Any] | None = field(default=None, metadata=rule(
        _optional(_error_record), "null or {\"type\", \"message\", \"traceback\"}"))
    # Graceful stops of the manager that put this attempt back uncounted (bounded).
    interruptions: int = field(default=0, metadata=rule(lambda v: _is_int(v) and 0 <= v <= 1000, "a count"))
    # The uid whose file submitted the job: in a shared spool, who may kill or retry it.
    submitter: int | None = field(default=None, metadata=rule(_optional(lambda v: _is_int(v) and 0 <= v < 2**32),
                                                              "a uid or null"))

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
    def from_dict(cls, doc: object, where: str = "status document") -> JobStatus:
        """Rebuild a status from its document, checking every key it relies on: a status
        file is input like any other (another program, a partial restore, a hostile
        user may have written it). Raises CorruptStatus naming what is wrong."""
        if not isinstance(doc, dict):
            raise CorruptStatus(f"{where}: not a JSON object")
        if doc.get("schema", SCHEMA) != SCHEMA:
            raise CorruptStatus(f"{where}: schema {doc.get('schema')!r} is not {SCHEMA}")
        spec_values: dict[str, Any] = {}
        has_task = doc.get("task") is not None
        for f, spec_rule in SPEC_FIELDS:
            key = spec_rule.status_key or f.name
            if spec_rule.only is not None and spec_rule.only != ("task" if has_task else "command"):
                continue
            if key not in doc:
                if f.name == "id" or (f.name == "command" and not has_task):
                    raise CorruptStatus(f"{where}: '{key}' is missing")
                continue
            spec_values[f.name] = _checked(doc[key], spec_rule, where, key)
        run_values: dict[str, Any] = {}
        for f, run_rule in RUN_FIELDS:
            if f.name not in doc:
                if f.default is dataclasses.MISSING:
                    raise CorruptStatus(f"{where}: '{f.name}' is missing")
                continue
            run_values[f.name] = _checked(doc[f.name], run_rule, where, f.name)
        return cls(spec=JobSpec(**spec_values), **run_values)

    @classmethod
    def decode(cls, data: bytes, where: str = "status document") -> JobStatus:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise CorruptStatus(f"{where}: not valid JSON: {exc}") from None
        return cls.from_dict(doc, where)


def _checked(value: Any, value_rule: Rule, where: str, key: str) -> Any:
    if not value_rule.check(value):
        raise CorruptStatus(f"{where}: '{key}' must be {value_rule.expected}, got {_shown(value)}")
    return _decoded(value_rule, value)


def _decoded(value_rule: Rule, value: Any) -> Any:
    decode = value_rule.decode
    return decode(value) if decode is not None else value


RUN_FIELDS: tuple[tuple[dataclasses.Field[Any], Rule], ...] = tuple(
    (f, f.metadata["rule"]) for f in dataclasses.fields(JobStatus) if "rule" in f.metadata)


def new_status(spec: JobSpec, now: str, submitter: int | None = None) -> JobStatus:
    return JobStatus(spec=spec, state=State.QUEUED, created_at=now, updated_at=now, submitter=submitter)


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
    return secrets.token_hex(6)


# ---------------------------------------------------------------- parsing a job file

def _shown(value: object) -> str:
    try:
        shown = orjson.dumps(value).decode()
    except TypeError:  # an integer beyond 64 bits, nesting too deep, lone surrogates
        shown = repr(value)
    return shown[:57] + "..." if len(shown) > 60 else shown


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
    if isinstance(doc.get("id"), str) and ID_PATTERN.match(doc["id"]):
        where = f"job {doc['id']!r} in {where}"
    for key in doc:
        if key not in RULES:
            hint = difflib.get_close_matches(str(key), SPEC_KEYS, n=1)
            tip = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise InvalidJobSpec(f"{where}: unknown key {_printable(str(key))!r}{tip}")
    for key, value in doc.items():
        key_rule = RULES[key]
        if not key_rule.check(value):
            raise InvalidJobSpec(f"{where}: '{key}' must be {key_rule.expected}, got {_shown(value)}")
    has_task, has_command = "task" in doc, "command" in doc
    if has_task == has_command:
        which = "both" if has_task else "neither"
        raise InvalidJobSpec(f"{where}: a job needs exactly one of 'task' and 'command', got {which}")
    kind = "task" if has_task else "command"
    wrong = [k for k in doc if RULES[k].only not in (None, kind)]
    if wrong:
        raise InvalidJobSpec(f"{where}: '{wrong[0]}' does not apply to a {kind} job")
    values = {k: _decoded(RULES[k], v) for k, v in doc.items()}
    values.setdefault("id", doc["id"] if "id" in doc else new_id())
    values["name"] = doc.get("name") or default_name
    return JobSpec(**values)


def _printable(text: str) -> str:
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text[:60] + "..." if len(text) > 60 else text


_LONG_DIGIT_RUN = re.compile(rb"\d{19}")


def _loads(data: bytes, where: str) -> object:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidJobSpec(f"{where}: not valid JSON: {exc}") from None
    if nesting_depth(doc, MAX_NESTING + 1) > MAX_NESTING + 1:  # the values within, one level down
        raise InvalidJobSpec(f"{where}: nested more than {MAX_NESTING} levels deep")
    if _LONG_DIGIT_RUN.search(data):
        # orjson turns integers beyond 64 bits into floats, silently losing digits;
        # only when a long digit run is present, re-read exactly to catch them (the
        # nesting was checked first: json's own parser recurses).
        json.loads(data, parse_int=lambda text: _int64_text(text, where))
    return doc


def _int64_text(text: str, where: str) -> int:
    value = int(text)
    if not -INT64 <= value < 2 * INT64:
        raise InvalidJobSpec(f"{where}: the integer {text[:24]}{'...' if len(text) > 24 else ''} "
                             "does not fit in 64 bits")
    return value


def check_file_start(data: bytes, filename: str) -> None:
    if not data.strip():
        raise InvalidJobSpec(f"{filename}: the file is empty")
    if data.startswith(b"\xef\xbb\xbf"):
        raise InvalidJobSpec(f"{filename}: the file starts with a byte-order mark; save it as UTF-8 without BOM")


def iter_job_file(data: bytes, filename: str, id_base: str) -> Iterator[JobSpec]:
    """The jobs of a ``.json`` (one job) or ``.jsonl`` (one job a line) file, one at a
    time, so a big batch can be taken in slices. Raises InvalidJobSpec at the first
    bad line (a ``.jsonl`` file is accepted whole or rejected whole: check every line
    before acting on any).

    Jobs without an id get ``id_base`` (``.json``) or ``id_base-N`` (line N of a
    ``.jsonl``): deterministic, so parsing the same claimed file again after a crash
    yields the same ids."""
    stem = filename.rsplit(".", 1)[0]
    check_file_start(data, filename)
    if not filename.endswith(".jsonl"):
        yield parse_job(_loads(data, filename), filename, stem, lambda: id_base)
        return
    seen: dict[str, int] = {}
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"{filename} line {number}"
        spec = parse_job(_loads(line, where), where, stem, functools.partial(_line_id, id_base, number))
        if spec.id in seen:
            raise InvalidJobSpec(f"{where}: duplicate id {spec.id!r} (also on line {seen[spec.id]})")
        seen[spec.id] = number
        yield spec


def _line_id(id_base: str, number: int) -> str:
    return f"{id_base}-{number}"


def parse_job_file(data: bytes, filename: str, id_base: str) -> list[JobSpec]:
    """Every job of a file at once (see ``iter_job_file``)."""
    return list(iter_job_file(data, filename, id_base))
