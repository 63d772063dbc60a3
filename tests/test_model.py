"""Job spec parsing and status encoding: pure, table-driven."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from pool.errors import CorruptStatus, InvalidJobSpec
from pool.jobfile import parse_job, parse_job_file
from pool.model import SPEC_KEYS, JobSpec, JobStatus, State, new_status

OK_TASK = {"task": "mytasks:render", "args": [42], "kwargs": {"quality": "high"}}


def parse(doc: object) -> JobSpec:
    return parse_job(doc, "x.json", "x", new_id=lambda: "generated")


def test_a_full_task_job_parses() -> None:
    spec = parse({**OK_TASK, "id": "render-42", "name": "render frame 42", "priority": 5, "retries": 2,
                  "retry_delay": 0.5, "retry_backoff": 3, "timeout": 10, "meta": {"k": 1}})
    assert (spec.id, spec.name, spec.task, spec.args, dict(spec.kwargs)) == (
        "render-42", "render frame 42", "mytasks:render", (42,), {"quality": "high"})
    assert (spec.priority, spec.retries, spec.max_attempts, spec.timeout) == (5, 2, 3, 10.0)


def test_defaults_id_and_name() -> None:
    spec = parse({"task": "m:f"})
    assert (spec.id, spec.name, spec.priority, spec.retries, spec.timeout) == ("generated", "x", 0, 0, None)


def test_a_command_job_parses() -> None:
    spec = parse({"command": ["ffmpeg", "-i", "in.mp4"], "cwd": "/data", "env": {"A": "1"}, "progress": "none"})
    assert spec.command == ("ffmpeg", "-i", "in.mp4") and spec.kind == "command"


@pytest.mark.parametrize("doc, message", [
    ({"task": "m:f", "retires": 3}, "unknown key 'retires' (did you mean 'retries'?)"),
    ({"task": "m:f", "bogus": 1}, "unknown key 'bogus'"),
    ({"task": "m:f", "command": ["ls"]}, "exactly one of 'task' and 'command', got both"),
    ({"name": "x"}, "exactly one of 'task' and 'command', got neither"),
    ({"task": "m:f", "priority": True}, "'priority' must be an integer"),
    ({"task": "m:f", "priority": "1"}, "'priority' must be an integer"),
    ({"task": "m:f", "priority": 2**70}, "'priority' must be an integer"),
    ({"task": "m:f", "retries": -1}, "'retries' must be an integer from 0"),
    ({"task": "m:f", "timeout": 0}, "'timeout' must be a number of seconds > 0"),
    ({"task": "m:f", "retry_backoff": 0.5}, "'retry_backoff' must be a number from 1 to 1000"),
    ({"task": "m:f", "args": {"a": 1}}, "'args' must be a list"),
    ({"task": "m:f", "kwargs": [1]}, "'kwargs' must be an object"),
    ({"task": "not a task"}, "'task' must be a string 'module:function'"),
    ({"command": []}, "'command' must be a non-empty list"),
    ({"command": "ls -l"}, "'command' must be a non-empty list"),
    ({"command": ["ls", 3]}, "'command' must be a non-empty list"),
    ({"command": ["ls"], "env": {"A": 1}}, "'env' must be an object of string names"),
    ({"command": ["ls"], "progress": "fancy"}, "'progress' must be 'auto', 'none'"),
    ({"command": ["ls"], "progress": {"regex": "("}}, "the regex does not compile: missing ), unterminated"),
    ({"command": ["ls"], "progress": {"regex": "(a)(b)"}}, "the regex has 2 groups"),
    ({"task": "m:f", "submitted_at": "2026-99-99T99:99:99.000000Z"}, "'submitted_at' must be a time like"),
    ({"task": "m:f", "submitted_at": "2026-02-30T00:00:00.000000Z"}, "'submitted_at' must be a time like"),
    ({"task": "m:f", "cwd": "/"}, "'cwd' does not apply to a task job"),
    ({"command": ["ls"], "args": [1]}, "'args' does not apply to a command job"),
    ({"task": "m:f", "at": "2126-01-01T00:00:00Z"}, "'at' must be a time like 2026-12-05T14:00:00"),
    ({"task": "m:f", "at": "tomorrow"}, "'at' must be a time like"),
    ({"task": "m:f", "at": "2026-12-05"}, "'at' must be a time like"),  # a date alone is no time
    ({"task": "m:f", "at": 1765000000}, "'at' must be a time like"),
    ({"task": "m:f", "delay": "-5m"}, "'delay' must be seconds, or a duration like 90s"),
    ({"task": "m:f", "delay": "2y"}, "'delay' must be seconds, or a duration"),
    ({"task": "m:f", "delay": 400 * 86400}, "at most a year"),
    ({"task": "m:f", "delay": True}, "'delay' must be seconds"),
    ({"task": "m:f", "at": "2026-12-05T14:00", "delay": 5}, "give 'at' or 'delay', not both"),
    ([1, 2], "a job must be a JSON object, got list"),
])
def test_bad_jobs_are_refused_naming_the_field(doc: object, message: str) -> None:
    with pytest.raises(InvalidJobSpec) as info:
        parse(doc)
    assert message in str(info.value)
    assert "x.json" in str(info.value)


@pytest.mark.parametrize("bad_id", ["../x", "a/b", "..", ".hidden", "-x", "x" * 65, "a\nb", "a b", "", "é"])
def test_bad_ids_are_refused(bad_id: str) -> None:
    with pytest.raises(InvalidJobSpec, match="'id' must be"):
        parse({"task": "m:f", "id": bad_id})


@pytest.mark.parametrize("good_id", ["a", "render-42", "A.b_c-9", "x" * 64])
def test_good_ids_are_accepted(good_id: str) -> None:
    assert parse({"task": "m:f", "id": good_id}).id == good_id


@pytest.mark.parametrize("data, message", [
    (b"", "the file is empty"),
    (b"   \n", "the file is empty"),
    (b'{"task": "m:f"', "not valid JSON"),
    (b'\xef\xbb\xbf{"task": "m:f"}', "byte-order mark"),
    (b'{"task": "m:f", "priority": NaN}', "not valid JSON"),
    (b'{"task": "m:f", "args": [123456789012345678901234567890]}', "does not fit in 64 bits"),
    (b"[" * 5000 + b"]" * 5000, "not valid JSON"),
    (b'{"task": "m:\xff"}', "not valid JSON"),
])
def test_bad_files_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(InvalidJobSpec, match=message):
        parse_job_file(data, "x.json", "tok")


def test_jsonl_ids_are_deterministic_from_the_token() -> None:
    data = b'{"task": "m:f"}\n\n{"task": "m:f", "id": "given"}\n{"task": "m:f"}\n'
    ids = [s.id for s in parse_job_file(data, "batch.jsonl", "tok")]
    assert ids == ["tok-1", "given", "tok-4"]
    assert ids == [s.id for s in parse_job_file(data, "batch.jsonl", "tok")]


def test_jsonl_is_rejected_whole_with_the_line_number() -> None:
    data = b'{"task": "m:f"}\n{"task": "m:f", "oops": 1}\n'
    with pytest.raises(InvalidJobSpec, match="batch.jsonl line 2: unknown key 'oops'"):
        parse_job_file(data, "batch.jsonl", "tok")


def test_jsonl_duplicate_ids_are_refused() -> None:
    data = b'{"task": "m:f", "id": "a"}\n{"task": "m:f", "id": "a"}\n'
    with pytest.raises(InvalidJobSpec, match="duplicate id 'a' \\(also on line 1\\)"):
        parse_job_file(data, "batch.jsonl", "tok")


def test_json_file_id_defaults_to_the_token_and_name_to_the_stem() -> None:
    [spec] = parse_job_file(b'{"task": "m:f"}', "render.json", "tok")
    assert (spec.id, spec.name) == ("tok", "render")


@pytest.mark.parametrize("doc", [
    OK_TASK,
    {"command": ["sh", "-c", "echo hi"], "cwd": "/tmp", "env": {"A": "b"}, "progress": {"regex": "(\\d+)", "total": 5}},
])
def test_status_round_trips_through_its_document(doc: dict) -> None:
    status = new_status(parse({**doc, "id": "j1", "meta": {"m": [1]}}), "2026-01-01T00:00:00.000000Z")
    again = JobStatus.decode(status.encode())
    assert again == status
    assert again.state is State.QUEUED


def test_status_document_follows_the_schema() -> None:
    status = new_status(parse({**OK_TASK, "id": "j1"}), "2026-01-01T00:00:00.000000Z")
    doc = status.to_dict()
    for key in ("id", "name", "task", "state", "progress", "message", "attempt", "max_attempts", "pid",
                "created_at", "started_at", "updated_at", "finished_at", "exit_code", "result", "error",
                "log", "priority", "meta", "schema"):
        assert key in doc, key
    assert doc["log"] == "logs/j1.log" and doc["schema"] == 1 and doc["state"] == "queued"


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("doc, message", [
    ({"task": "m:f", "retry_delay": 1e15}, "'retry_delay' must be a number of seconds from 0 to 31536000"),
    ({"task": "m:f", "retry_backoff": 1e200}, "'retry_backoff' must be a number from 1 to 1000"),
    ({"task": "m:f", "timeout": 1e300}, "'timeout' must be a number of seconds > 0 and at most 31536000"),
    ({"task": "m:f", "meta": {"x": nested(70)}}, "'meta' must be an object nested at most 64 levels deep"),
    ({"task": "m:f", "args": [nested(65)]}, "'args' must be a list nested at most 64 levels deep"),
])
def test_values_out_of_range_are_refused_at_the_door(doc: dict, message: str) -> None:
    with pytest.raises(InvalidJobSpec) as info:
        parse(doc)
    assert message in str(info.value)


@pytest.mark.parametrize("depth", [300, 1000, 1023])
def test_deep_nesting_is_refused_before_anything_recurses(depth: int) -> None:
    data = b'{"task": "m:f", "meta": {"n": 1234567890123456789, "x": ' + b"[" * depth + b"]" * depth + b"}}"
    with pytest.raises(InvalidJobSpec, match="nested more than 64 levels deep|depth limit exceeded"):
        parse_job_file(data, "deep.json", "tok")


TIMES = b'"created_at": "2026-01-01T00:00:00.000000Z", "updated_at": "2026-01-01T00:00:00.000000Z"'


@pytest.mark.parametrize("data, message", [
    (b"[]", "not a JSON object"),
    (b"{}", "'id' is missing"),
    (b'{"id": "x", "task": "m:f", "state": "sleeping", "created_at": "t", "updated_at": "t"}', "'state' must be"),
    (b'{"id": "x", "task": "m:f", "state": "queued", %s, "attempt": "one"}' % TIMES, "'attempt' must be"),
    (b'{"id": "x", "task": "m:f", "state": "queued", %s, "error": "boom"}' % TIMES, "'error' must be"),
    (b'{"id": "x", "task": "m:f", "state": "queued", "created_at": "t", "updated_at": "t"}', "'created_at' must be"),
    (b'{"id": "x", "command": "ls", "state": "queued", "created_at": "t", "updated_at": "t"}', "'command' must be"),
    (b'{"id": "../x", "task": "m:f", "state": "queued", "created_at": "t", "updated_at": "t"}', "'id' must be"),
    (b"not json", "not valid JSON"),
])
def test_a_status_document_pool_could_not_have_written_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(CorruptStatus, match=message):
        JobStatus.decode(data, "status/x.json")


def test_text_that_cannot_be_encoded_is_written_with_a_stand_in() -> None:
    name = b"report-\xff.csv".decode("utf-8", "surrogateescape")
    status = dataclasses.replace(new_status(parse(OK_TASK), "2026-01-01T00:00:00.000000Z"),
                                 message=f"processing {name}")
    doc = orjson.loads(status.encode())
    assert doc["message"] == "processing report-?.csv"


def test_every_key_is_described_once_in_the_field_table() -> None:
    assert set(SPEC_KEYS) == {f.name for f in dataclasses.fields(JobSpec)}
    assert all("rule" in f.metadata for f in dataclasses.fields(JobSpec))
    run_keys = {f.name for f in dataclasses.fields(JobStatus)} - {"spec"}
    assert run_keys <= set(new_status(parse(OK_TASK), "t").to_dict())
