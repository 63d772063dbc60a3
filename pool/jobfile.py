"""Job files: what a user drops into incoming/, parsed and checked. Pure, no I/O.

A ``.json`` file holds one job, a ``.jsonl`` file one job a line (accepted whole or
rejected whole). Every key is checked by its rule in the field table (pool/model.py);
every message names the file, the line and the key at fault.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Iterator

import orjson

from .errors import InvalidJobSpec
from .model import ID_PATTERN, RULES, SPEC_KEYS, JobSpec, new_job_id
from .rules import INT64, MAX_NESTING, decoded, did_you_mean, nesting_depth, shown_value


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
            raise InvalidJobSpec(f"{where}: unknown key {_printable(str(key))!r}{did_you_mean(key, SPEC_KEYS)}")
    for key, value in doc.items():
        key_rule = RULES[key]
        if not key_rule.check(value):
            why = key_rule.explain(value) if key_rule.explain else None
            raise InvalidJobSpec(f"{where}: '{key}' must be {key_rule.expected}, got {shown_value(value)}"
                                 + (f": {why}" if why else ""))
    has_task, has_command = "task" in doc, "command" in doc
    if has_task == has_command:
        which = "both" if has_task else "neither"
        raise InvalidJobSpec(f"{where}: a job needs exactly one of 'task' and 'command', got {which}")
    if doc.get("at") is not None and doc.get("delay") is not None:
        raise InvalidJobSpec(f"{where}: give 'at' or 'delay', not both")
    if "id" in doc and doc["id"] in doc.get("after", ()):
        raise InvalidJobSpec(f"{where}: 'after' names the job itself")
    kind = "task" if has_task else "command"
    wrong = [k for k in doc if RULES[k].only not in (None, kind)]
    if wrong:
        raise InvalidJobSpec(f"{where}: '{wrong[0]}' does not apply to a {kind} job")
    values = {k: decoded(RULES[k], v) for k, v in doc.items()}
    if has_task:  # the jobs of a batch mostly run one task: one string for all, not one each
        values["task"] = sys.intern(values["task"])
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
