"""The rules a job's keys and a status's fields are checked by: small pure predicates, and
``Rule``, which ties one to the message saying what the value must be. pool/model.py
puts a rule on every field; parsing, encoding and strict decoding read them there."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeGuard

import orjson

from .errors import CorruptStatus

INT64 = 2**63
# A year: a retry delay or timeout beyond it is a mistake, and datetime arithmetic on
# 1e15 seconds overflows (a job with "retry_delay": 1e15 once re-ran thousands of times).
MAX_SECONDS = 365 * 24 * 3600.0
# orjson reads 1,024 levels but writes only ~254, and a status document nests a job's
# values one level deeper than its file did: anything deeper than this is refused.
MAX_NESTING = 64


def did_you_mean(key: object, known: Iterable[str]) -> str:
    """What an unknown key's message ends with: the known key it is closest to, if any."""
    import difflib  # only for a mistake: not on every command's way (benchmarks/cli_start.py)

    hint = difflib.get_close_matches(str(key), list(known), n=1)
    return f" (did you mean '{hint[0]}'?)" if hint else ""


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)  # type: ignore[arg-type]


def int64(value: object) -> bool:
    return is_int(value) and -INT64 <= value < INT64  # type: ignore[operator]


def seconds(value: object, low: float = 0.0, open_low: bool = False) -> bool:
    return is_number(value) and (value > low if open_low else value >= low) and value <= MAX_SECONDS


def str_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


# The dynamic loader's variables (LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, macOS's DYLD_*):
# they load code into every program a job starts.
LOADER_ENV_PREFIXES = ("LD_", "DYLD_")


def is_loader_variable(name: str) -> bool:
    return name.startswith(LOADER_ENV_PREFIXES)


def env_map(value: object) -> bool:
    """An environment: names (no '=', not empty) to values, no NUL anywhere."""
    return str_map(value) and all(k and "=" not in k and "\0" not in k + v for k, v in value.items())  # type: ignore[attr-defined]


def progress_form(value: object) -> bool:
    if value in ("auto", "none"):
        return True
    if not isinstance(value, dict) or not isinstance(value.get("regex"), str):
        return False
    if set(value) - {"regex", "total"} or regex_problem(value["regex"]) is not None:
        return False
    total = value.get("total")
    return total is None or (is_number(total) and total > 0)


def regex_problem(text: str) -> str | None:
    """Why ``text`` cannot read progress from a command's output, or None: it must
    compile, with one group around the number (none: the whole match is the number, as
    jobs accepted before this check may say). Checked at intake: a job whose regex fails
    only once its command prints is a job that fails for a reason it was given."""
    try:
        compiled = re.compile(text)
    except (re.error, RecursionError, OverflowError, ValueError) as exc:
        return f"the regex does not compile: {exc}"
    if compiled.groups > 1:
        return f"the regex has {compiled.groups} groups; give one, around the number"
    return None


def progress_problem(value: object) -> str | None:
    """What is wrong with a progress form's regex, if that is what is wrong."""
    if isinstance(value, dict) and isinstance(value.get("regex"), str):
        return regex_problem(value["regex"])
    return None


def nesting_depth(value: object, limit: int = MAX_NESTING) -> int:
    """How deeply lists and objects nest in ``value`` (a scalar is 0), counting no
    further than ``limit + 1``. Iterative: Python's own recursion limit is no bound."""
    if not isinstance(value, (list, tuple, dict)):
        return 0
    flat = value.values() if isinstance(value, dict) else value
    if not any(isinstance(item, (list, tuple, dict)) for item in flat):
        return 1  # the usual: arguments and metadata of plain values
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


def shallow(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
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
    explain: Callable[[Any], str | None] | None = None  # why a value is refused, beyond `expected`
    in_status: Rule | None = None  # how it is kept in a status document, when not as in a job file


def rule(check: Callable[[Any], bool], expected: str, **options: Any) -> dict[str, Rule]:
    return {"rule": Rule(check, expected, **options)}


def as_float(value: Any) -> Any:
    return float(value) if value is not None else None


def tuple_or_none(value: Any) -> Any:
    return tuple(value) if value is not None else None


def list_or_none(value: Any) -> Any:
    return list(value) if value is not None else None


def optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def text(v: object) -> bool:
    return isinstance(v, str)


ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")


def is_time(v: object) -> bool:
    """A time as pool writes them (``2026-11-29T13:26:33.000000Z``), and a real one: a
    month 99 is refused where it is read, not where someone later sorts or subtracts it."""
    if not isinstance(v, str) or ISO_TIME.match(v) is None:
        return False
    try:
        datetime.fromisoformat(v[:-1] + "+00:00")
    except ValueError:
        return False
    return True


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> float | None:
    """``90s``, ``15m``, ``2h``, ``1d``, ``2w``, or plain seconds (a number, or its text),
    as seconds; None when it is none of those, or negative."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        unit = DURATION_UNITS.get(text[-1:])
        try:
            number = float(text[:-1] if unit else text) * (unit or 1)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def is_delay(v: object) -> bool:
    found = parse_duration(v)
    return found is not None and found <= MAX_SECONDS


def parse_moment(value: object) -> datetime | None:
    """An ISO 8601 date and time (``2026-12-05T14:00``, ``...T14:00:00+01:00``, ``...Z``),
    as an aware datetime: with no offset it is this machine's local time. None when it is
    not one."""
    if not isinstance(value, str) or len(value) > 64 or ("T" not in value.upper() and " " not in value):
        return None
    try:
        moment = datetime.fromisoformat(value[:-1] + "+00:00" if value[-1:] in "Zz" else value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.astimezone()


def is_moment(v: object) -> bool:
    """A time (``parse_moment``) from the year 2000 to a year from now."""
    moment = parse_moment(v)
    if moment is None:
        return False
    from_now = (moment - datetime.now(timezone.utc)).total_seconds()
    return moment.year >= 2000 and from_now <= MAX_SECONDS


def utc_moment(value: str) -> str:
    """A time ``is_moment`` accepts, as pool writes times (UTC, microseconds, Z)."""
    moment = parse_moment(value)
    assert moment is not None
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def is_error_info(v: object) -> bool:
    return (isinstance(v, dict) and isinstance(v.get("type"), str) and isinstance(v.get("message"), str)
            and (v.get("traceback") is None or isinstance(v.get("traceback"), str)))


def checked(value: Any, value_rule: Rule, where: str, key: str) -> Any:
    if not value_rule.check(value):
        raise CorruptStatus(f"{where}: '{key}' must be {value_rule.expected}, got {shown_value(value)}")
    return decoded(value_rule, value)


def decoded(value_rule: Rule, value: Any) -> Any:
    decode = value_rule.decode
    return decode(value) if decode is not None else value


def shown_value(value: object) -> str:
    try:
        shown = orjson.dumps(value).decode()
    except TypeError:  # an integer beyond 64 bits, nesting too deep, lone surrogates
        shown = repr(value)
    return shown[:57] + "..." if len(shown) > 60 else shown
