"""Job spec parsing and status encoding: pure, table-driven."""

from __future__ import annotations

import pytest

from pool.errors import InvalidJobSpec
from pool.model import JobSpec, JobStatus, State, new_status, parse_job, parse_job_file

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
    ({"task": "m:f", "cwd": "/"}, "'cwd' does not apply to a task job"),
    ({"command": ["ls"], "args": [1]}, "'args' does not apply to a command job"),
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
