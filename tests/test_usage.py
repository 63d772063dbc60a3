"""What each attempt used (pool/usage.py): its CPU time, its peak memory and its wall
time, the job's own even in a worker that ran bigger jobs before; the same figures as
the kernel gives /usr/bin/time; and what a running job uses now, for `pool top`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Server, drop, events_of, job, log_text, run_pool, state_of, status_doc, wait_until

from cli.views import UsageView
from pool.client import Spool
from pool.errors import CorruptStatus
from pool.model import JobStatus
from pool.procs import stat_fields
from pool.usage import Meter, Usage, is_usage

MIB = 1024 * 1024
# A command that holds 150 MiB (every page touched) while it burns 1 s of CPU.
HOLD_AND_BURN = ("import time\nheld = bytearray(150 * 1024 * 1024)\n"
                 "for page in range(0, len(held), 4096):\n    held[page] = 1\n"
                 "end = time.process_time() + 1.0\nwhile time.process_time() < end:\n    pass\n")


# ---------------------------------------------------------------- the pure part
def test_a_meter_counts_what_ran_since_it_started_not_before() -> None:
    before = bytearray(300 * MIB)  # what an earlier job of this process held
    for page in range(0, len(before), 4096):
        before[page] = 1
    del before
    meter = Meter()
    held = bytearray(60 * MIB)
    for page in range(0, len(held), 4096):
        held[page] = 1
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    used = meter.read(own_code=True)
    assert 60 * MIB <= used.max_rss < 200 * MIB  # the earlier 300 MiB peak is not this one's
    assert 0.3 <= used.cpu < 0.5
    assert used.wall >= 0.3
    del held


def test_a_meter_counts_a_reaped_command_alone_when_asked() -> None:
    meter = Meter()
    subprocess.run([sys.executable, "-c", HOLD_AND_BURN], check=True)
    used = meter.read(own_code=False)
    assert 150 * MIB <= used.max_rss < 200 * MIB
    assert 1.0 <= used.cpu < 1.3


@pytest.mark.parametrize("usage", [
    {"wall": 1.0, "user": 0.5, "system": 0.1},
    {"wall": -1.0, "user": 0.5, "system": 0.1, "max_rss": 1},
    {"wall": 1.0, "user": float("nan"), "system": 0.1, "max_rss": 1},
    {"wall": 1.0, "user": 0.5, "system": 0.1, "max_rss": 2 ** 70},
    {"wall": 1.0, "user": 0.5, "system": 0.1, "max_rss": True},
    {"wall": 1.0, "user": 0.5, "system": 0.1, "max_rss": 1, "more": 1},
    [1, 2, 3],
])
def test_a_usage_record_pool_could_not_have_written_is_refused(usage: object) -> None:
    assert not is_usage(usage)
    doc = {"schema": 1, "id": "u", "task": "m:f", "state": "done", "created_at": "2026-12-05T10:00:00.000000Z",
           "updated_at": "2026-12-05T10:00:00.000000Z", "usage": usage}
    with pytest.raises(CorruptStatus, match="'usage' must be"):
        JobStatus.from_dict(doc)


def test_a_usage_record_reads_back_as_written() -> None:
    used = Usage(wall=1.5, user=1.25, system=0.125, max_rss=123 * MIB)
    assert is_usage(used.to_dict()) and Usage.from_dict(used.to_dict()) == used


# ---------------------------------------------------------------- a real manager
@pytest.mark.every_engine
def test_each_attempt_records_what_it_used_the_jobs_own_in_a_worker_that_ran_bigger_ones(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve("--workers", "1")
    drop(spool_dir, "big.json", job("uses", 300, 0.0, id="big"))
    wait_until(lambda: state_of(spool_dir, "big") == "done", what="the big job done")
    drop(spool_dir, "small.json", job("uses", 40, 0.5, id="small"))  # the same worker, after it
    wait_until(lambda: state_of(spool_dir, "small") == "done", what="the small job done")
    big, small = (Usage.from_dict((status_doc(spool_dir, i) or {})["usage"]) for i in ("big", "small"))
    assert big.max_rss >= 300 * MIB
    assert 40 * MIB <= small.max_rss < 150 * MIB
    assert 0.5 <= small.cpu < 0.7 and small.wall >= 0.5
    shown = run_pool(spool_dir, "status", "small", check=True).stdout
    assert re.search(r"^used: +cpu 0\.\d\ds \(user 0\.\d\ds, system 0\.\d\ds\), peak RSS \d+\.\d MiB, wall \d\.\d\ds",
                     shown, re.M), shown


def test_each_attempt_keeps_its_usage_in_the_events_and_the_status_the_last(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve()
    work = tmp_path / "work"
    drop(spool_dir, "r.json", job("stepped", str(work), kwargs={"fail_at": 50}, id="r", retries=1, retry_delay=0))
    wait_until(lambda: state_of(spool_dir, "r") == "done", what="done on its second attempt")
    # The manager appends events after the statuses they record: the last one may come later.
    wait_until(lambda: any(e["to"] == "done" for e in events_of(spool_dir, "r")), what="its end in events.jsonl")
    ends = [e for e in events_of(spool_dir, "r") if e["to"] in ("queued", "done") and e["from"] == "running"]
    assert [e["attempt"] for e in ends] == [1, 2]
    assert all(is_usage(e["usage"]) for e in ends)
    assert (status_doc(spool_dir, "r") or {})["usage"] == ends[-1]["usage"]


@pytest.mark.needs_gnu_time("to compare pool's figures with the kernel's, as /usr/bin/time -v reports them")
def test_a_command_uses_what_usr_bin_time_says_it_uses(spool_dir: Path, serve: Callable[..., Server]) -> None:
    """One run, two accounts: the job is the command under /usr/bin/time -v, which prints
    the kernel's figures for it into the job's log (two separate runs of it differ by
    10% on a loaded machine). time itself adds a millisecond of CPU and a smaller peak."""
    serve("--allow-commands")
    drop(spool_dir, "c.json", {"id": "c", "command": ["/usr/bin/time", "-v", sys.executable, "-c", HOLD_AND_BURN]})
    wait_until(lambda: state_of(spool_dir, "c") == "done", what="done")
    timed = log_text(spool_dir, "c")
    figures = dict(re.findall(r"^\s*(.+?): (\S+)$", timed, re.M))
    their_cpu = float(figures["User time (seconds)"]) + float(figures["System time (seconds)"])
    their_rss = int(figures["Maximum resident set size (kbytes)"]) * 1024
    ours = Usage.from_dict((status_doc(spool_dir, "c") or {})["usage"])
    assert abs(ours.cpu - their_cpu) <= 0.05 * their_cpu, (ours, timed)
    assert abs(ours.max_rss - their_rss) <= 0.05 * their_rss, (ours, timed)


def test_a_running_job_shows_what_it_uses_now_and_an_ended_one_what_it_used(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve()
    gate = tmp_path / "gate"
    drop(spool_dir, "done.json", job("uses", 20, 0.0, id="done"))
    drop(spool_dir, "hot.json", job("hot_progress", str(gate), id="hot"))
    wait_until(lambda: state_of(spool_dir, "done") == "done" and state_of(spool_dir, "hot") == "running",
               what="one ended, one running")
    spool = Spool(spool_dir)
    hot_pid = (status_doc(spool_dir, "hot") or {})["pid"]
    view = UsageView()
    spent = cpu_seconds(hot_pid)
    first = view.cells(spool.statuses())
    assert first["hot"][0] == ""  # a CPU % needs a look before
    assert re.fullmatch(r"\d+\.\d MiB", first["hot"][1])
    assert re.fullmatch(r"\d+\.\ds", first["done"][0]) and re.fullmatch(r"\d+\.\d MiB", first["done"][1])
    wait_until(lambda: cpu_seconds(hot_pid) > spent + 0.2, what="the job spends CPU between the two looks")
    second = view.cells(spool.statuses())
    percent = int(second["hot"][0].rstrip("%"))
    assert percent > 10  # it spins on pool.progress
    listed = run_pool(spool_dir, "status", "--usage", check=True).stdout
    assert re.search(r"^\s*ID .* CPU +RSS", listed, re.M), listed
    assert "CPU" not in run_pool(spool_dir, "status", check=True).stdout
    gate.touch()
    wait_until(lambda: state_of(spool_dir, "hot") == "done", what="done")


def cpu_seconds(pid: int) -> float:
    fields = stat_fields(pid)
    assert fields is not None, f"process {pid} is gone"
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
