"""Schedules: the slots of a cron line or an interval (across clock changes), the checks
of a schedule file, the manager's firings stepped by hand (catch-up, overlap, a manager
killed between a job and its record), and a real manager driven by `pool schedule`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from conftest import Server, made, run_pool, state_of, status_doc, wait_until
from test_manager_steps import FakeClock, Stepped

from pool.client import Spool
from pool.schedules import MAX_CATCH_UP, InvalidSchedule, Schedule, parse_record, parse_schedule

MADRID = ZoneInfo("Europe/Madrid")
TASK = {"task": "m:f"}


def cron(line: str, tz: str | None = "Europe/Madrid") -> Schedule:
    return parse_schedule({"cron": line, "tz": tz, "job": TASK}, "n")


def madrid(*when: int) -> float:
    return datetime(*when, tzinfo=MADRID).timestamp()  # type: ignore[misc]


def shown(moments: list[float]) -> list[str]:
    return [datetime.fromtimestamp(m, MADRID).strftime("%m-%d %H:%M%z") for m in moments]


# ---------------------------------------------------------------- slots
def test_a_local_time_the_clocks_skip_is_no_slot() -> None:
    # 2026-03-29: at 02:00 Madrid's clocks go to 03:00; 02:30 does not exist that day.
    slots = cron("30 2 * * *").slots(madrid(2026, 3, 27), madrid(2026, 3, 31), 10)
    assert shown(slots) == ["03-27 02:30+0100", "03-28 02:30+0100", "03-30 02:30+0200"]


def test_a_local_time_the_clocks_repeat_is_one_slot_its_first() -> None:
    # 2026-10-25: at 03:00 Madrid's clocks go back to 02:00; 02:00-02:59 happens twice.
    schedule = cron("*/30 * * * *")
    slots = schedule.slots(madrid(2026, 10, 25, 1, 0), madrid(2026, 10, 25, 1, 0) + 4 * 3600, 20)
    assert shown(slots) == ["10-25 01:30+0200", "10-25 02:00+0200", "10-25 02:30+0200", "10-25 03:00+0100",
                            "10-25 03:30+0100", "10-25 04:00+0100"]
    assert len({schedule.slot_id(s) for s in slots}) == len(slots)
    # Asked from inside the repeated hour, the next slot is after it: never the same id twice.
    inside = madrid(2026, 10, 25, 2, 45) + 3600  # 02:45 the second time
    assert shown([schedule.next_after(inside) or 0]) == ["10-25 03:00+0100"]


def test_a_slot_has_one_id_named_after_its_wall_time() -> None:
    assert cron("0 3 * * *").slot_id(madrid(2026, 11, 29, 3, 0)) == "n-20261129T0300"
    assert cron("*/10 * * * * *").slot_id(madrid(2026, 11, 29, 3, 0, 10)) == "n-20261129T030010"
    every = parse_schedule({"every": "15m", "job": TASK}, "e")
    assert every.slot_id(900) == "e-19700101T0015Z"
    assert parse_schedule({"every": 1.5, "job": TASK}, "e").slot_id(3) == "e-19700101T000003Z"


def test_slots_are_the_newest_ones_and_bounded() -> None:
    every = parse_schedule({"every": "1m", "job": TASK}, "e")
    assert every.slots(0, 600, 3) == [480.0, 540.0, 600.0]
    assert every.slots(600, 600, 3) == [] and every.slots(0, 59, 3) == []
    assert every.next_after(600) == 660.0
    # A year of a cron line every minute: the newest few, walked back from the end.
    assert len(cron("* * * * *").slots(madrid(2025, 1, 1), madrid(2026, 1, 1), 5)) == 5


# ---------------------------------------------------------------- checks
@pytest.mark.parametrize("doc, name, says", [
    ({"cron": "0 3 * *", "job": TASK}, "n", "does not parse: Wrong number of fields"),
    ({"cron": "61 * * * *", "job": TASK}, "n", "does not parse: Bad minute"),
    ({"cron": "0 0 30 2 *", "job": TASK}, "n", "does not parse"),
    ({"cron": "0 3 * * *", "tz": "Mars/Olympus", "job": TASK}, "n", "time zone \"Mars/Olympus\" does not exist"),
    ({"cron": "0 3 * * *", "tz": "../../etc/passwd", "job": TASK}, "n", "does not exist"),
    ({"every": "-5m", "job": TASK}, "n", "'every' must be a duration"),
    ({"every": 0.5, "job": TASK}, "n", "from 1s to a year"),
    ({"every": "400d", "job": TASK}, "n", "from 1s to a year"),
    ({"every": "1m", "cron": "* * * * *", "job": TASK}, "n", "exactly one of 'cron' and 'every'"),
    ({"job": TASK}, "n", "exactly one of 'cron' and 'every'"),
    ({"every": "1m"}, "n", "'job' must be a job object"),
    ({"every": "1m", "job": {**TASK, "at": "2026-12-05T14:00"}}, "n", "cannot have 'at'"),
    ({"every": "1m", "job": {**TASK, "after": ["x"]}}, "n", "cannot have 'after'"),
    ({"every": "1m", "job": {**TASK, "retries": -1}}, "n", "'retries' must be"),
    ({"every": "1m", "job": {"task": "m:f", "command": ["ls"]}}, "n", "exactly one of 'task' and 'command'"),
    ({"every": "1m", "job": TASK, "overlap": "sometimes"}, "n", "'overlap' must be one of skip, queue, allow"),
    ({"every": "1m", "job": TASK, "catch_up": 3}, "n", "'catch_up' must be one of latest, none, all"),
    ({"every": "1m", "job": TASK, "paused": "yes"}, "n", "'paused' must be true or false"),
    ({"every": "1m", "job": TASK, "evry": 1}, "n", "unknown key \"evry\""),
    ({"every": "1m", "job": TASK}, "a/b", "a schedule's name is 1-40 letters"),
    ({"every": "1m", "job": TASK}, "x" * 41, "a schedule's name is 1-40 letters"),
    ([1, 2], "n", "a schedule must be a JSON object"),
])
def test_a_bad_schedule_is_refused_saying_why(doc: Any, name: str, says: str) -> None:
    with pytest.raises(InvalidSchedule) as refused:
        parse_schedule(doc, name)
    assert says in str(refused.value)
    assert "\n" not in str(refused.value)


def test_without_cronsim_a_cron_line_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cronsim", None)  # as if it were not installed
    with pytest.raises(InvalidSchedule, match=r"pip install 'spoolpool\[cron\]'"):
        parse_schedule({"cron": "0 3 * * *", "job": TASK}, "n")
    assert parse_schedule({"every": "1h", "job": TASK}, "n").every == 3600  # intervals need nothing


@pytest.mark.parametrize("data", [b"", b"[]", b'{"through": 3}', b'{"through": "2026-12-05T00:00:00Z", "fired": -1}',
                                  b'{"through": "2026-12-05T00:00:00.000000Z", "last_job": 7}', b"\xff"])
def test_a_record_that_is_not_one_is_ignored(data: bytes) -> None:
    assert parse_record(data) is None


# ---------------------------------------------------------------- the manager, stepped by hand
@pytest.fixture
def stepped(tmp_path: Path) -> Iterator[Stepped]:
    yield Stepped(tmp_path / "spool", slots=2, any_task=True)  # any task is served


def add(stepped: Stepped, name: str = "tick", **when: Any) -> None:
    Spool(stepped.spool_dir).add_schedule(name, {"every": "60s", "job": TASK, **when})


def fired(stepped: Stepped, name: str = "tick") -> list[str]:
    return sorted(i for i in Spool(stepped.spool_dir).dir.status_ids() if i.startswith(f"{name}-"))


def at_minute(stepped: Stepped, seconds: float = 1.0) -> None:
    """Move the clock to ``seconds`` past the next minute, and step."""
    stepped.step(after=60 - stepped.clock.time() % 60 + seconds)


def test_each_slot_fires_one_job_named_after_it(stepped: Stepped) -> None:
    add(stepped)
    stepped.step()
    assert fired(stepped) == []  # a new schedule counts from when it was written
    at_minute(stepped)
    first = fired(stepped)
    slot = int(stepped.clock.time() // 60 * 60)
    assert first == [f"tick-{datetime.fromtimestamp(slot, timezone.utc):%Y%m%dT%H%M}Z"]
    assert stepped.doc(first[0])["state"] == "queued"
    assert stepped.events(first[0])[0][3].startswith("fired by schedule tick")
    stepped.step(after=30)
    assert fired(stepped) == first  # nothing more until the next slot
    info = Spool(stepped.spool_dir).schedule_info("tick")
    assert info.record is not None and info.record.last_job == first[0] and info.record.fired == 1
    assert info.next_at is not None and info.next_at.timestamp() == slot + 60


def passed_while_no_manager_ran(tmp_path: Path, minutes: int,
                                **when: Any) -> Stepped:
    """A schedule whose record says it was handled ``minutes`` ago, and a manager that
    starts now."""
    spool = Spool(tmp_path / "spool")
    spool.dir.create()
    spool.add_schedule("tick", {"every": "60s", "job": TASK, "overlap": "allow", **when})
    now = FakeClock().time()
    through = (now // 60 - minutes) * 60 + 0.5
    spool.dir.schedules.write_record("tick", parse_record(orjson.dumps(
        {"through": datetime.fromtimestamp(through, timezone.utc).isoformat().replace("+00:00", "Z")}))
                                     or pytest.fail("a record"))
    return Stepped(tmp_path / "spool", slots=2, any_task=True)


@pytest.mark.parametrize("catch_up, count", [("latest", 1), ("none", 0), ("all", 10)])
def test_slots_missed_while_no_manager_ran_are_caught_up_as_asked(
        tmp_path: Path, catch_up: str, count: int) -> None:
    stepped = passed_while_no_manager_ran(tmp_path, 10, catch_up=catch_up)
    stepped.step()
    assert len(fired(stepped)) == count
    record = Spool(stepped.spool_dir).schedule_info("tick").record
    assert record is not None and record.fired == count and record.skipped == 10 - count
    at_minute(stepped)  # the next slot, on time, fires whatever catch_up says
    assert len(fired(stepped)) == count + 1


def test_catching_up_all_is_bounded(tmp_path: Path) -> None:
    stepped = passed_while_no_manager_ran(tmp_path, 60 * 24 * 30, catch_up="all")
    stepped.step()
    assert len(fired(stepped)) == MAX_CATCH_UP


@pytest.mark.parametrize("overlap", ["skip", "queue", "allow"])
def test_a_slot_due_while_the_last_firing_runs_is_skipped_queued_or_allowed(stepped: Stepped, overlap: str) -> None:
    add(stepped, overlap=overlap)
    at_minute(stepped)
    [first] = fired(stepped)
    assert stepped.executor.holds(first)  # handed to a worker: not ended (queued or running)
    at_minute(stepped)
    record = Spool(stepped.spool_dir).schedule_info("tick").record
    assert record is not None
    if overlap == "skip":
        assert fired(stepped) == [first] and record.skipped == 1
        return
    second = fired(stepped)[1]
    doc = stepped.doc(second)
    if overlap == "queue":
        assert doc["state"] == "waiting" and doc["after"] == [first] and doc["after_policy"] == "finished"
    else:
        assert doc["state"] == "queued" and doc["after"] == []


def test_a_manager_killed_between_a_firing_and_its_record_fires_the_slot_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = Stepped(tmp_path / "spool", slots=2, any_task=True)
    add(first)
    at_minute(first)
    [job_id] = fired(first)
    (tmp_path / "spool" / "schedules" / "tick.state").unlink()  # died before writing it
    clock = first.clock
    monkeypatch.setattr("test_manager_steps.FakeClock", lambda: clock)
    second = Stepped(tmp_path / "spool", slots=2, any_task=True)
    second.step()
    assert fired(second) == [job_id]
    assert [e[3] for e in second.events(job_id)].count(first.events(job_id)[0][3]) == 1  # created once
    record = Spool(second.spool_dir).schedule_info("tick").record
    assert record is not None and record.last_job == job_id


def test_a_paused_schedule_fires_nothing_and_resumes_from_the_next_slot(stepped: Stepped) -> None:
    add(stepped)
    spool = Spool(stepped.spool_dir)
    spool.pause_schedule("tick")
    at_minute(stepped)
    at_minute(stepped)
    assert fired(stepped) == []
    assert spool.schedule_info("tick").next_at is None
    spool.pause_schedule("tick", paused=False)
    stepped.step(after=1)
    assert fired(stepped) == []  # the slots passed while paused are not caught up
    at_minute(stepped)
    assert len(fired(stepped)) == 1


def test_a_bad_schedule_file_is_rejected_with_its_reason_and_the_others_fire(stepped: Stepped) -> None:
    add(stepped, name="good")
    bad = stepped.spool_dir / "schedules"
    (bad / "typo.json").write_bytes(orjson.dumps({"every": "1m", "jb": TASK}))
    (bad / "link.json").symlink_to(bad / "good.json")
    (bad / "notjson.json").write_bytes(b"{every")
    at_minute(stepped)
    assert len(fired(stepped, "good")) == 1
    spool = Spool(stepped.spool_dir)
    reasons = {r["name"]: r["reason"] for r in spool.rejections()}
    assert "unknown key \"jb\" (did you mean 'job'?)" in reasons["schedule.typo.json"]
    assert "symbolic link" in reasons["schedule.link.json"]
    assert "is not JSON" in reasons["schedule.notjson.json"]
    assert sorted(p.name for p in bad.iterdir() if p.suffix == ".json") == ["good.json"]


def test_a_schedule_whose_job_this_manager_cannot_run_is_rejected(tmp_path: Path) -> None:
    stepped = Stepped(tmp_path / "spool", slots=2)  # no task served, no commands allowed
    Spool(stepped.spool_dir).add_schedule("cmd", {"every": "1m", "job": {"command": ["true"]}})
    stepped.step()
    [rejected] = Spool(stepped.spool_dir).rejections()
    assert "command jobs are disabled" in rejected["reason"]


# ---------------------------------------------------------------- a real manager, by the command line
def test_pool_schedule_fires_lists_runs_pauses_and_removes(spool_dir: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    server = Server(spool_dir, "--workers", "2").start()
    try:
        added = run_pool(spool_dir, "schedule", "add", "tick", "--every", "1s", "--", "pooltest_tasks:counted",
                         str(runs), check=True)
        assert added.stdout.startswith("schedule tick: every 1s, next at ")
        spool = Spool(spool_dir)

        def done_firings() -> list[str]:
            return [i for i in spool.dir.status_ids() if i.startswith("tick-") and state_of(spool_dir, i) == "done"]

        wait_until(lambda: len(done_firings()) >= 2, 30, "two firings done")
        listed = run_pool(spool_dir, "schedule", "list", check=True).stdout
        assert "tick" in listed and "every 1s" in listed and "done" in listed
        [doc] = [orjson.loads(line) for line in run_pool(spool_dir, "schedule", "list", "--json",
                                                         check=True).stdout.splitlines()]
        assert doc["name"] == "tick" and doc["fired"] >= 2 and doc["schedule"]["every"] == 1.0

        now_id = run_pool(spool_dir, "schedule", "run", "tick", check=True).stdout.strip()
        assert now_id.startswith("tick-now-")
        wait_until(lambda: state_of(spool_dir, now_id) == "done", 30, "the firing asked for now to be done")

        assert run_pool(spool_dir, "schedule", "pause", "tick", check=True).stdout == "schedule tick paused\n"
        assert "paused" in run_pool(spool_dir, "schedule", "list", check=True).stdout
        assert run_pool(spool_dir, "schedule", "remove", "tick", check=True).stdout == "schedule tick removed\n"
        assert run_pool(spool_dir, "schedule", "list").stderr.startswith("no schedules")
    finally:
        assert server.stop() == 0
    assert all(status_doc(spool_dir, i)["state"] == "done" for i in done_firings())  # type: ignore[index]


@pytest.mark.parametrize("args, says", [
    (["add", "x", "--cron", "0 3 * *", "--", "m:f"], "does not parse: Wrong number of fields"),
    (["add", "x", "--every", "-5m", "--", "m:f"], "'every' must be a duration"),
    (["add", "x", "--cron", "0 3 * * *", "--tz", "Nowhere/Land", "--", "m:f"], "does not exist"),
    (["add", "a/b", "--every", "1m", "--", "m:f"], "a schedule's name is 1-40 letters"),
    (["remove", "ghost"], "no schedule 'ghost'"),
    (["run", "ghost"], "no schedule 'ghost'"),
    (["pause", "../x"], "no schedule '../x'"),
])
def test_a_bad_schedule_command_is_one_line_and_exit_1(spool_dir: Path, args: list[str], says: str) -> None:
    result = run_pool(made(spool_dir), "schedule", *args)
    assert result.returncode == 1, result.stderr
    assert says in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("args, says", [
    (["add", "--every", "1m", "--", "m:f"], "give the schedule's name first"),
    (["add", "x", "--", "m:f"], "give --cron LINE or --every DURATION"),
    (["add", "x", "--every", "1m", "--cron", "* * * * *", "--", "m:f"], "give --cron LINE or --every DURATION"),
    (["add", "x", "--every", "1m", "--id", "y", "--", "m:f"], "No such option '--id'"),
])
def test_a_schedule_command_misused_is_exit_2(spool_dir: Path, args: list[str], says: str) -> None:
    result = run_pool(made(spool_dir), "schedule", *args)
    assert result.returncode == 2 and says in result.stderr, result.stderr


def test_a_schedule_that_exists_is_replaced_only_when_asked(spool_dir: Path) -> None:
    made(spool_dir)
    run_pool(spool_dir, "schedule", "add", "x", "--every", "1m", "--", "m:f", check=True)
    again = run_pool(spool_dir, "schedule", "add", "x", "--every", "2m", "--", "m:f")
    assert again.returncode == 1 and "already exists" in again.stderr
    run_pool(spool_dir, "schedule", "add", "x", "--every", "2m", "--replace", "--", "m:f", check=True)
    assert Spool(spool_dir).schedule_info("x").schedule.every == 120  # type: ignore[union-attr]
