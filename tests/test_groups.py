"""Groups with a limit of their own: the queue gives the most urgent job of the groups
that may start one (no head-of-line blocking, FIFO within each), dispatch counts every
job handed over against its group, the limit lives in groups/ and survives restarts, and
the jobs themselves count how many of their group run at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from conftest import Server, drop, job, made, run_pool, state_of, status_doc, wait_until
from test_manager_steps import Stepped

from pool import lifecycle
from pool.client import Spool
from pool.executor import Completed
from pool.groups import InvalidGroup, parse_group
from pool.jobqueue import JobQueue
from pool.model import JobSpec, JobStatus, State


def queued(job_id: str, group: str | None = None, priority: int = 0, at: int = 0) -> JobStatus:
    created = f"2026-12-05T00:00:{at:02d}.000000Z"
    return JobStatus(spec=JobSpec(id=job_id, task="m:f", group=group, priority=priority), state=State.QUEUED,
                     created_at=created, updated_at=created)


def test_a_full_group_never_holds_back_the_jobs_of_another() -> None:
    queue = JobQueue()
    for n, (job_id, group) in enumerate([("g1", "gpu"), ("g2", "gpu"), ("c1", None), ("g3", "gpu"), ("c2", "cpu")]):
        queue.push(queued(job_id, group, at=n), 0.0, 0.0)
    gpu_full = lambda job: job.spec.group != "gpu"  # noqa: E731
    assert [queue.pop(gpu_full).id for _ in range(2)] == ["c1", "c2"]  # type: ignore[union-attr]
    assert queue.pop(gpu_full) is None and "g1" in queue
    assert [queue.pop().id for _ in range(3)] == ["g1", "g2", "g3"]  # type: ignore[union-attr]


def test_within_a_group_priority_then_submission_order_holds() -> None:
    queue = JobQueue()
    queue.push(queued("late-high", "gpu", priority=5, at=3), 0.0, 0.0)
    queue.push(queued("early", "gpu", at=1), 0.0, 0.0)
    queue.push(queued("earlier", "gpu", at=0), 0.0, 0.0)
    queue.push(queued("other-high", "cpu", priority=9, at=9), 0.0, 0.0)
    assert [queue.pop().id for _ in range(4)] == ["other-high", "late-high", "earlier", "early"]  # type: ignore[union-attr]


@pytest.mark.parametrize("doc, says", [
    ({"parallel": 0}, "'parallel' must be a number of jobs from 1 to 1024"),
    ({"parallel": 1.5}, "'parallel' must be"),
    ({"parallel": True}, "'parallel' must be"),
    ({"paralel": 2}, "did you mean 'parallel'?"),
    ([], "a group must be a JSON object"),
])
def test_a_bad_group_file_is_refused_saying_why(doc: object, says: str) -> None:
    with pytest.raises(InvalidGroup, match=says.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        parse_group(doc, "gpu")
    with pytest.raises(InvalidGroup, match="a group's name is 1-40"):
        parse_group({"parallel": 1}, "a/b")


# ---------------------------------------------------------------- the manager, stepped by hand
@pytest.fixture
def stepped(tmp_path: Path) -> Iterator[Stepped]:
    yield Stepped(tmp_path / "spool", slots=3, any_task=True)  # any task is served


def test_dispatch_hands_over_no_more_of_a_group_than_its_limit(stepped: Stepped) -> None:
    Spool(stepped.spool_dir).set_group("gpu", 1)
    for job_id, group in [("g1", "gpu"), ("g2", "gpu"), ("c1", None), ("c2", None)]:
        stepped.submit(job_id, group=group)
    stepped.step()
    assert set(stepped.executor.held) == {"g1", "c1", "c2"}  # g2 waits; the jobs behind it do not
    assert stepped.manager.dispatch.in_group["gpu"] == 1
    stepped.executor.begin("g1", stepped.clock.now)
    stepped.executor.end("g1", Completed(lifecycle.Succeeded(None)))
    stepped.step()
    assert "g2" in stepped.executor.held and stepped.manager.dispatch.in_group["gpu"] == 1


def test_a_new_limit_is_read_when_its_file_changes(stepped: Stepped) -> None:
    spool = Spool(stepped.spool_dir)
    spool.set_group("gpu", 1)
    for n in range(3):
        stepped.submit(f"g{n}", group="gpu")
    stepped.step()
    assert set(stepped.executor.held) == {"g0"}
    spool.set_group("gpu", 2)
    stepped.step()
    assert set(stepped.executor.held) == {"g0", "g1"}
    spool.set_group("gpu", None)  # no limit of its own: the workers only
    stepped.step()
    assert set(stepped.executor.held) == {"g0", "g1", "g2"}


def test_a_bad_group_file_is_rejected_and_its_group_has_no_limit(stepped: Stepped) -> None:
    (stepped.spool_dir / "groups").mkdir(exist_ok=True)
    (stepped.spool_dir / "groups" / "gpu.json").write_bytes(orjson.dumps({"parallel": -1}))
    stepped.step()
    [rejected] = Spool(stepped.spool_dir).rejections()
    assert rejected["name"] == "group.gpu.json" and "'parallel' must be" in rejected["reason"]
    assert stepped.manager.dispatch.limits == {}


def test_a_job_with_a_group_name_that_cannot_be_one_is_rejected(stepped: Stepped) -> None:
    stepped.submit("bad", group="../gpu")
    stepped.step()
    [rejected] = Spool(stepped.spool_dir).rejections()
    assert "'group' must be a group name" in rejected["reason"]


# ---------------------------------------------------------------- a real manager
def test_a_group_limit_holds_as_its_jobs_count_it_and_others_run_beside(spool_dir: Path, tmp_path: Path) -> None:
    runs, gpu, cpu = tmp_path / "runs", tmp_path / "gpu", tmp_path / "cpu"
    gpu.mkdir()
    cpu.mkdir()
    made(spool_dir)
    assert run_pool(spool_dir, "group", "set", "gpu", "--parallel", "1", check=True).stdout == \
        "group gpu: at most 1 at a time\n"
    lines = [job("counted_at_once", str(runs), str(gpu), 0.2, id=f"g{n}", group="gpu") for n in range(5)]
    lines += [job("counted_at_once", str(runs), str(cpu), 0.2, id=f"c{n}") for n in range(6)]
    drop(spool_dir, "mix.jsonl", b"\n".join(orjson.dumps(line) for line in lines))
    server = Server(spool_dir, "--workers", "3").start()
    try:
        # (started, not running: a job shorter than a progress interval never says running)
        wait_until(lambda: (status_doc(spool_dir, "g0") or {}).get("started_at"), 30, "the first gpu job started")
        listed = run_pool(spool_dir, "group", "list", check=True).stdout.splitlines()
        assert listed[0].split() == ["GROUP", "LIMIT", "PAUSED", "RUNNING", "QUEUED", "WAITING"]
        assert [line.split()[:2] for line in listed if line.startswith("gpu ")] == [["gpu", "1"]]
        wait_until(lambda: all(state_of(spool_dir, str(line["id"])) == "done" for line in lines), 60, "all done")
    finally:
        assert server.stop() == 0
    assert set((tmp_path / "gpu.at-once").read_text().split()) == {"1"}  # never two gpu jobs at once
    started = {str(line["id"]): status_doc(spool_dir, str(line["id"]))["started_at"] for line in lines}  # type: ignore[index]
    # The gpu jobs came first, yet cpu jobs started while they waited for their group.
    assert sum(started[f"c{n}"] < started["g4"] for n in range(6)) >= 2, started


def test_status_says_what_a_queued_job_of_a_full_group_waits_for(spool_dir: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    Spool(made(spool_dir)).set_group("gpu", 1)
    server = Server(spool_dir, "--workers", "2").start()
    try:
        drop(spool_dir, "a.json", job("hold", str(gate), id="a", group="gpu"))
        wait_until(lambda: state_of(spool_dir, "a") == "running", 30, "a running")
        drop(spool_dir, "b.json", job("hold", str(gate), id="b", group="gpu"))
        wait_until(lambda: state_of(spool_dir, "b") == "queued", 30, "b queued")
        table = run_pool(spool_dir, "status", check=True).stdout
        assert [line for line in table.splitlines() if line.startswith("b ")][0].rstrip().endswith("group gpu 1/1")
        gate.touch()
        wait_until(lambda: state_of(spool_dir, "b") == "done", 30, "b done")
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("args, code, says", [
    (["set", "gpu"], 2, "give --parallel N or --no-limit"),
    (["set", "gpu", "--parallel", "0"], 2, "0 is not in the range"),
    (["set", "a/b", "--parallel", "1"], 1, "a group's name is 1-40"),
    (["remove", "a/b"], 1, "a group's name is 1-40"),
])
def test_a_bad_group_command_says_so_in_one_line(spool_dir: Path, args: list[str], code: int, says: str) -> None:
    result = run_pool(made(spool_dir), "group", *args)
    assert result.returncode == code and says in result.stderr and "Traceback" not in result.stderr, result.stderr


# ---------------------------------------------------------------- a paused group
def test_a_paused_group_starts_nothing_and_the_others_go_on(stepped: Stepped) -> None:
    spool = Spool(stepped.spool_dir)
    spool.pause_group("gpu")
    for job_id, group in [("g1", "gpu"), ("c1", None), ("g2", "gpu")]:
        stepped.submit(job_id, group=group)
    stepped.step()
    assert set(stepped.executor.held) == {"c1"}
    spool.pause_group("default")  # the jobs that name no group
    stepped.submit("c2")
    spool.resume_group("gpu")
    stepped.step()
    assert set(stepped.executor.held) == {"c1", "g1", "g2"}  # c2 waits: its group is paused now
    assert [g.name for g in spool.groups() if g.paused] == ["default"]


def test_pool_pause_group_takes_back_what_was_sent_ahead_and_keeps_it_across_a_restart(
        spool_dir: Path, tmp_path: Path) -> None:
    gate, hold_gpu = tmp_path / "gate", tmp_path / "gpu-gate"
    made(spool_dir)
    server = Server(spool_dir, "--workers", "1").start()
    try:
        drop(spool_dir, "a.json", job("hold", str(gate), id="a"))
        wait_until(lambda: state_of(spool_dir, "a") == "running", 30, "a running")
        drop(spool_dir, "b.json", job("hold", str(hold_gpu), id="b", group="gpu"))  # sent ahead to a's worker
        wait_until(lambda: state_of(spool_dir, "b") == "queued", 30, "b taken in")
        said = run_pool(spool_dir, "pause", "--group", "gpu", check=True).stdout
        assert said == "group gpu: paused (starts nothing until `pool resume --group gpu`)\n"
        row = [line for line in run_pool(spool_dir, "status", check=True).stdout.splitlines() if line.startswith("b ")]
        assert row[0].rstrip().endswith("group gpu paused")
        drop(spool_dir, "c.json", job("add", 1, 1, id="c"))
        gate.touch()
        wait_until(lambda: state_of(spool_dir, "c") == "done", 30, "c done after a, with b held")
        assert state_of(spool_dir, "b") == "queued"
    finally:
        assert server.stop() == 0
    server = Server(spool_dir, "--workers", "1").start()
    try:
        drop(spool_dir, "d.json", job("add", 2, 2, id="d"))
        wait_until(lambda: state_of(spool_dir, "d") == "done", 30, "d done, gpu still paused after a restart")
        assert state_of(spool_dir, "b") == "queued"
        listed = run_pool(spool_dir, "group", "list", check=True).stdout.splitlines()
        assert [line.split()[:3] for line in listed if line.startswith("gpu ")] == [["gpu", "-", "yes"]]
        hold_gpu.touch()
        assert run_pool(spool_dir, "resume", "--group", "gpu", check=True).stdout == "group gpu: resumed\n"
        wait_until(lambda: state_of(spool_dir, "b") == "done", 30, "b done once its group resumed")
    finally:
        assert server.stop() == 0


def test_pausing_a_group_with_stop_running_pauses_its_running_jobs_too(spool_dir: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    made(spool_dir)
    server = Server(spool_dir, "--workers", "2").start()
    try:
        drop(spool_dir, "r.json", job("hold", str(gate), id="r", group="gpu"))
        drop(spool_dir, "o.json", job("hold", str(gate), id="o"))
        wait_until(lambda: {state_of(spool_dir, i) for i in "ro"} == {"running"}, 30, "both running")
        said = run_pool(spool_dir, "pause", "--group", "gpu", "--stop-running", check=True).stdout.splitlines()
        assert said[0] == "r: paused" and state_of(spool_dir, "o") == "running"
        gate.touch()
        wait_until(lambda: state_of(spool_dir, "o") == "done", 30, "o done, r paused")
        assert state_of(spool_dir, "r") == "paused"
        said = run_pool(spool_dir, "resume", "--all", check=True).stdout.splitlines()
        assert "group gpu: resumed" in said and ("r: running" in said or "r: done" in said), said
        wait_until(lambda: state_of(spool_dir, "r") == "done", 30, "r done once resumed")
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("args, says", [
    (["pause"], "give job ids, --group G or --all"),
    (["pause", "--stop-running", "x"], "--stop-running goes with --group or --all"),
    (["resume", "--all", "--group", "g"], "not both"),
])
def test_pause_misused_is_a_usage_error(spool_dir: Path, args: list[str], says: str) -> None:
    result = run_pool(made(spool_dir), *args)
    assert result.returncode == 2 and says in result.stderr, result.stderr
