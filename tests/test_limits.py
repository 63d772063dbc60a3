"""Limits a job cannot pass (pool/limits.py, pool/forked.py) and admission by declared
needs (pool/dispatch.py): a job over its memory or CPU limit fails saying which, and
nothing else suffers; a job whose needs do not fit waits, smaller ones start meanwhile,
and a big one is never starved by a stream of small ones."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Server, drop, job, made, refused, run_pool, state_of, status_doc, wait_until

from pool.errors import InvalidJobSpec
from pool.jobfile import parse_job
from pool.limits import Capacity, Limits, Needs, parse_size

ALLOCATE_400M = "held = bytearray(400 * 1024 * 1024)\nfor page in range(0, len(held), 4096):\n    held[page] = 1\n"


# ---------------------------------------------------------------- the pure part
@pytest.mark.parametrize("text, size", [
    ("2G", 2 << 30), ("512M", 512 << 20), ("1.5G", 3 << 29), ("64k", 64 << 10), ("2GiB", 2 << 30), ("2GB", 2 << 30),
    ("4096", 4096), (4096, 4096), ("-1G", None), ("2X", None), ("", None), (True, None), (float("inf"), None),
    ("9" * 30, None), ("1e400", None),
])
def test_a_size_is_read_as_a_person_writes_it(text: object, size: int | None) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("doc, says", [
    ({"limits": {"memory": "2X"}}, "memory must be a size of at least 1M, like 2G or 512M, got '2X'"),
    ({"limits": {"memory": -1}}, "memory must be a size of at least 1M"),
    ({"limits": {"memory": "100"}}, "memory must be a size of at least 1M"),
    ({"limits": {"cpu_seconds": 0}}, "cpu_seconds must be a number of seconds from 1"),
    ({"limits": {"cpu_seconds": float("nan")}}, "cpu_seconds must be"),
    ({"limits": {"nice": 20}}, "nice must be an integer from 0 to 19"),
    ({"limits": {"nice": -5}}, "nice must be an integer from 0 to 19"),
    ({"limits": {"open_files": 2 ** 64}}, "open_files must be an integer from 16"),
    ({"limits": {"memroy": "2G"}}, "has an unknown key 'memroy'"),
    ({"limits": "2G"}, "must be an object"),
    ({"needs": {"cpus": -1}}, "cpus must be a number from 0 to 4096"),
    ({"needs": {"memory": "lots"}}, "memory must be a size like 4G or 512M, got 'lots'"),
    ({"needs": {"gpus": 1}}, "has an unknown key 'gpus'"),
])
def test_a_limit_or_need_that_is_not_one_is_refused_saying_why(doc: dict[str, object], says: str) -> None:
    with pytest.raises(InvalidJobSpec, match=says.replace("(", r"\(").replace(")", r"\)")):
        parse_job({"task": "m:f", **doc}, "x.json", "x")


def test_limits_read_back_as_written_and_a_jobs_own_win_over_the_managers() -> None:
    spec = parse_job({"task": "m:f", "limits": {"memory": "2G", "cpu_seconds": 600, "nice": 10, "open_files": 1024},
                      "needs": {"memory": "4G", "cpus": 2}}, "x.json", "x")
    assert spec.limits == Limits(2 << 30, 600.0, 10, 1024) and spec.needs == Needs(4 << 30, 2.0)
    again = parse_job({"task": "m:f", "limits": spec.to_dict()["limits"], "needs": spec.to_dict()["needs"]},
                      "x.json", "x")
    assert (again.limits, again.needs) == (spec.limits, spec.needs)
    assert Limits(memory=1 << 30).over(Limits(memory=4 << 30, nice=5)) == Limits(memory=1 << 30, nice=5)


def test_a_need_bigger_than_the_manager_is_refused() -> None:
    capacity = Capacity(16 << 30, 8.0)
    assert capacity.refuses(Needs(32 << 30, 1)) == ("it needs 32 GiB of memory, more than this manager runs jobs in "
                                                    "(16 GiB: pool serve --memory)")
    assert capacity.refuses(Needs(0, 9)) == "it needs 9 CPUs, more than this manager has (8: pool serve --cpus)"
    assert capacity.refuses(Needs(16 << 30, 8)) is None


# ---------------------------------------------------------------- limits, with a real manager
def test_a_task_over_its_memory_limit_fails_saying_so_and_nothing_else_suffers(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve("--workers", "2")
    gate = tmp_path / "gate"
    drop(spool_dir, "bystander.json", job("hold", str(gate), id="bystander"))
    wait_until(lambda: state_of(spool_dir, "bystander") == "running", what="a job beside it running")
    drop(spool_dir, "hog.json", job("uses", 400, 0.0, id="hog", limits={"memory": "200M"}))
    wait_until(lambda: state_of(spool_dir, "hog") == "failed", what="the hog failed")
    hog = status_doc(spool_dir, "hog") or {}
    assert hog["error"]["type"] == "MemoryLimit"
    assert hog["error"]["message"] == "used more than 200 MiB of memory (its limit: limits.memory)"
    assert "MemoryError" in hog["error"]["traceback"]
    assert state_of(spool_dir, "bystander") == "running"
    drop(spool_dir, "after.json", job("limits_seen", id="after"))  # the hog's worker runs on, unlimited
    wait_until(lambda: state_of(spool_dir, "after") == "done", what="the next job done")
    gate.touch()
    wait_until(lambda: state_of(spool_dir, "bystander") == "done", what="the job beside it done")
    assert "pool serve: " not in run_pool(spool_dir, "status").stderr


def test_a_manager_wide_memory_limit_applies_where_a_job_sets_none(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve("--job-memory", "200M")
    drop(spool_dir, "capped.json", job("uses", 400, 0.0, id="capped"))
    drop(spool_dir, "own.json", job("uses", 400, 0.0, id="own", limits={"memory": "2G"}))
    wait_until(lambda: state_of(spool_dir, "capped") == "failed" and state_of(spool_dir, "own") == "done",
               what="both ended")
    assert (status_doc(spool_dir, "capped") or {})["error"]["type"] == "MemoryLimit"


def test_a_command_over_its_memory_limit_fails_naming_the_limit(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve("--allow-commands")
    drop(spool_dir, "c.json", {"id": "c", "command": [sys.executable, "-c", ALLOCATE_400M],
                               "limits": {"memory": "200M"}})
    wait_until(lambda: state_of(spool_dir, "c") == "failed", what="failed")
    error = (status_doc(spool_dir, "c") or {})["error"]
    assert error["message"] == "command exited with code 1 (with a memory limit of 200 MiB: limits.memory)"
    assert "MemoryError" in run_pool(spool_dir, "logs", "c", check=True).stdout


@pytest.mark.parametrize("kind", ["task", "command"])
def test_a_job_over_its_cpu_limit_fails_saying_so(spool_dir: Path, serve: Callable[..., Server], kind: str) -> None:
    serve("--allow-commands")
    burn = job("uses", 0, 3600.0, id="burn") if kind == "task" else \
        {"id": "burn", "command": [sys.executable, "-c", "while True: pass"]}
    drop(spool_dir, "burn.json", {**burn, "limits": {"cpu_seconds": 1}})
    wait_until(lambda: state_of(spool_dir, "burn") == "failed", what="failed")
    doc = status_doc(spool_dir, "burn") or {}
    assert (doc["error"]["type"], doc["error"]["message"]) == ("CPULimit", "used more than 1 s of CPU (its limit: "
                                                                           "limits.cpu_seconds)")
    assert 1.0 <= doc["usage"]["user"] + doc["usage"]["system"] < 3.0


def test_nice_and_open_files_hold_for_the_job_and_not_for_the_next_one_in_its_worker(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve("--workers", "1")
    drop(spool_dir, "niced.json", job("limits_seen", id="niced", limits={"nice": 10, "open_files": 64}))
    wait_until(lambda: state_of(spool_dir, "niced") == "done", what="done")
    drop(spool_dir, "plain.json", job("limits_seen", id="plain"))
    wait_until(lambda: state_of(spool_dir, "plain") == "done", what="done")
    niced, plain = ((status_doc(spool_dir, i) or {})["result"] for i in ("niced", "plain"))
    assert niced["nice"] == 10 and niced["open_files"] == [64, 64]
    assert niced["worker"] == plain["worker"] and niced["pid"] != niced["worker"]  # a process of its own
    assert plain["nice"] == 0 and plain["open_files"] != [64, 64] and plain["pid"] == plain["worker"]
    assert "limits:    nice 10, open files 64\n" in run_pool(spool_dir, "status", "niced", check=True).stdout


def test_the_command_line_sets_limits_and_needs_and_refuses_a_bad_one(spool_dir: Path) -> None:
    made(spool_dir)
    done = run_pool(spool_dir, "submit", "--memory", "2G", "--cpu-seconds", "600", "--nice", "10", "--open-files",
                    "1024", "--needs-memory", "4G", "--needs-cpus", "2", "--id", "x", "pooltest_tasks:add", "1", "2")
    assert done.returncode == 0, done.stderr
    written = (spool_dir / "incoming" / "x.json").read_text()
    assert '"limits":{"memory":2147483648,"cpu_seconds":600.0,"nice":10,"open_files":1024}' in written
    assert '"needs":{"memory":4294967296,"cpus":2.0}' in written
    bad = run_pool(spool_dir, "submit", "--memory", "2X", "pooltest_tasks:add", "1", "2")
    assert bad.returncode == 2 and "'2X' is not a size like 2G or 512M" in bad.stderr
    assert "Traceback" not in bad.stderr


# ---------------------------------------------------------------- needs, with a real manager
def test_a_job_that_needs_more_than_the_manager_has_is_refused_at_intake(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve("--memory", "1G", "--cpus", "2")
    drop(spool_dir, "big.json", job("add", 1, 2, id="big", needs={"memory": "2G"}))
    assert refused(spool_dir, "big.json") == ("job 'big' in big.json: it needs 2 GiB of memory, more than this manager "
                                              "runs jobs in (1 GiB: pool serve --memory)")


def started_at(spool_dir: Path, job_id: str) -> str:
    return str((status_doc(spool_dir, job_id) or {})["started_at"])


def test_smaller_jobs_start_while_a_big_one_waits_for_room(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve("--workers", "4", "--cpus", "2", "--reserve-after", "3600")
    gate = tmp_path / "gate"
    drop(spool_dir, "running.json", job("hold", str(gate), id="running", needs={"cpus": 1}))
    wait_until(lambda: state_of(spool_dir, "running") == "running", what="one CPU taken")
    drop(spool_dir, "big.json", job("hold", str(gate), id="big", needs={"cpus": 2}))
    wait_until(lambda: state_of(spool_dir, "big") == "queued", what="the big one queued")
    drop(spool_dir, "small.json", job("add", 1, 2, id="small", needs={"cpus": 1}))
    wait_until(lambda: state_of(spool_dir, "small") == "done", what="the small one, behind it, done")
    assert state_of(spool_dir, "big") == "queued"  # it needs both CPUs: one still runs
    assert "needs:     2 CPUs\n" in run_pool(spool_dir, "status", "big", check=True).stdout
    gate.touch()
    wait_until(lambda: state_of(spool_dir, "big") == "done", what="the big one done once there was room")


def test_a_big_job_is_not_starved_by_a_stream_of_small_ones(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    """With --reserve-after 0, the big job holds its reservation at once: the small ones
    submitted after it wait until it has started, though each would fit beside what runs."""
    serve("--workers", "4", "--cpus", "2", "--reserve-after", "0")
    gate = tmp_path / "gate"
    drop(spool_dir, "running.json", job("hold", str(gate), id="running", needs={"cpus": 1}))
    wait_until(lambda: state_of(spool_dir, "running") == "running", what="one CPU taken")
    drop(spool_dir, "big.json", job("add", 1, 2, id="big", needs={"cpus": 2}))
    wait_until(lambda: state_of(spool_dir, "big") == "queued", what="the big one queued")
    for n in range(5):
        drop(spool_dir, f"small-{n}.json", job("add", n, n, id=f"small-{n}", needs={"cpus": 1}))
    wait_until(lambda: all(state_of(spool_dir, f"small-{n}") == "queued" for n in range(5)), what="all queued")
    gate.touch()
    wait_until(lambda: all(state_of(spool_dir, f"small-{n}") == "done" for n in range(5)), what="all done")
    assert all(started_at(spool_dir, "big") < started_at(spool_dir, f"small-{n}") for n in range(5))
