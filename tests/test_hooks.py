"""Completion hooks (`pool serve --on-finish CMD`): once per end of a job, with its status
on stdin; whatever the hook does, the job's state stays; across restarts, never twice for
one end, and run for an end that came while no manager ran."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import orjson
from conftest import TESTS, Server, drop, job, run_pool, state_of, status_doc, wait_until

from pool.client import Spool


def hook(out: Path, how: str = "ok") -> str:
    out.mkdir(exist_ok=True)
    return shlex.join([sys.executable, str(TESTS / "hook_writer.py"), str(out), how])


def runs(out: Path, job_id: str) -> list[dict[str, Any]]:
    return [orjson.loads(p.read_bytes()) for p in sorted(out.glob(f"{job_id}.*.json"))]


def test_a_hook_runs_once_per_job_with_its_final_status_and_says_how_it_ended(spool_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "hooks"
    server = Server(spool_dir, "--allow-commands", "--on-finish", hook(out)).start()
    try:
        drop(spool_dir, "ok.json", job("add", 1, 2, id="ok"))
        drop(spool_dir, "bad.json", job("fail", "no", id="bad"))
        drop(spool_dir, "cmd.json", {"id": "cmd", "command": ["sh", "-c", "exit 7"]})
        wait_until(lambda: all(runs(out, i) for i in ("ok", "bad", "cmd")), 30, "a hook for each job")
        assert run_pool(spool_dir, "kill", "--", "ok").returncode == 0  # final already: nothing runs again
    finally:
        assert server.stop() == 0
    [ok], [bad], [cmd] = runs(out, "ok"), runs(out, "bad"), runs(out, "cmd")
    assert ok["stdin"]["state"] == "done" and ok["stdin"]["result"] == 3
    assert ok["env"] == {"POOL_JOB_ID": "ok", "POOL_STATE": "done", "POOL_EXIT_CODE": "",
                         "POOL_SPOOL": str(spool_dir.absolute())}
    assert bad["env"]["POOL_STATE"] == "failed" and bad["stdin"]["error"]["type"] == "ValueError"
    assert cmd["env"]["POOL_STATE"] == "failed" and cmd["env"]["POOL_EXIT_CODE"] == "7"
    assert (spool_dir / "logs" / "ok.hook.log").read_text() == "hook for ok: ok\n"
    record = orjson.loads((spool_dir / "status" / "ok.hook").read_bytes())
    assert record["ended"] == status_doc(spool_dir, "ok")["finished_at"] and record["exit_code"] == 0  # type: ignore[index]


def test_a_failing_or_hanging_hook_never_changes_the_jobs_state(spool_dir: Path, tmp_path: Path) -> None:
    failing, hanging = tmp_path / "failing", tmp_path / "hanging"
    for out, how, extra in ((failing, "fail", ()), (hanging, "hang", ("--hook-timeout", "0.5"))):
        spool = spool_dir.parent / f"spool-{how}"
        server = Server(spool, "--on-finish", hook(out, how), *extra).start()
        try:
            drop(spool, "j.json", job("add", 1, 1, id="j"))
            wait_until(lambda: (spool / "status" / "j.hook").exists(), 30, "the hook's end recorded")
        finally:
            assert server.stop() == 0
        record = orjson.loads((spool / "status" / "j.hook").read_bytes())
        assert record["exit_code"] == (3 if how == "fail" else -9)
        assert state_of(spool, "j") == "done" and len(runs(out, "j")) == 1
        said = "its on-finish hook exited with 3" if how == "fail" else "its on-finish hook ran past 0.5s: killed"
        assert said in server.output()


def test_a_restarted_manager_never_runs_a_hook_twice_and_runs_the_ones_it_missed(
        spool_dir: Path, tmp_path: Path) -> None:
    out, gate = tmp_path / "hooks", tmp_path / "gate"
    server = Server(spool_dir, "--on-finish", hook(out)).start()
    try:
        drop(spool_dir, "early.json", job("add", 1, 1, id="early"))
        drop(spool_dir, "late.json", job("hold", str(gate), id="late"))
        wait_until(lambda: runs(out, "early") and state_of(spool_dir, "late") == "running", 30, "early hooked")
        assert run_pool(spool_dir, "stop", "--detach").returncode == 0  # late runs on, with no manager
    finally:
        server.stop()
    gate.touch()
    wait_until(lambda: state_of(spool_dir, "late") == "done", 30, "late done while no manager ran")
    assert not runs(out, "late")
    server = Server(spool_dir, "--on-finish", hook(out)).start()
    try:
        wait_until(lambda: runs(out, "late"), 30, "the hook it missed")
        drop(spool_dir, "after.json", job("add", 2, 2, id="after"))
        wait_until(lambda: runs(out, "after"), 30, "a hook after the restart")
    finally:
        assert server.stop() == 0
    assert [len(runs(out, i)) for i in ("early", "late", "after")] == [1, 1, 1]
    run_pool(spool_dir, "retry", "early", check=True)  # a new end: its hook runs again
    server = Server(spool_dir, "--on-finish", hook(out)).start()
    try:
        wait_until(lambda: len(runs(out, "early")) == 2, 30, "the hook of its second end")
    finally:
        assert server.stop() == 0
    assert [len(runs(out, i)) for i in ("early", "late", "after")] == [2, 1, 1]


def test_turning_hooks_on_runs_none_for_jobs_that_ended_before(spool_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "hooks"
    server = Server(spool_dir).start()
    try:
        drop(spool_dir, "old.json", job("add", 1, 1, id="old"))
        wait_until(lambda: state_of(spool_dir, "old") == "done", 30, "old done")
    finally:
        assert server.stop() == 0
    server = Server(spool_dir, "--on-finish", hook(out)).start()
    try:
        drop(spool_dir, "new.json", job("add", 1, 1, id="new"))
        wait_until(lambda: runs(out, "new"), 30, "the new job's hook")
    finally:
        assert server.stop() == 0
    assert not runs(out, "old")


def test_a_bad_on_finish_is_a_usage_error(spool_dir: Path) -> None:
    for bad in ("", "'unclosed"):
        result = run_pool(spool_dir, "serve", "--on-finish", bad)
        assert result.returncode == 2 and "--on-finish" in result.stderr, result.stderr


def test_a_jobs_own_hook_runs_after_the_managers_once_per_end(spool_dir: Path, tmp_path: Path) -> None:
    managers, owns = tmp_path / "managers", tmp_path / "owns"
    server = Server(spool_dir, "--allow-commands", "--on-finish", hook(managers)).start()
    try:
        own = shlex.split(hook(owns))
        drop(spool_dir, "mine.json", job("add", 2, 3, id="mine", on_finish=own))
        submitted = run_pool(spool_dir, "submit", "--id", "cli", "--on-finish", hook(owns), "pooltest_tasks:add", "1",
                             "1", check=True)
        assert submitted.stdout.strip() == "cli"
        wait_until(lambda: (spool_dir / "status" / "mine.hook").exists() and (spool_dir / "status" / "cli.hook").exists(),
                   30, "both jobs' hooks recorded")
    finally:
        assert server.stop() == 0
    [by_manager], [by_job] = runs(managers, "mine"), runs(owns, "mine")
    assert by_manager["stdin"] == by_job["stdin"] and by_job["stdin"]["result"] == 5
    assert by_job["env"]["POOL_STATE"] == "done" and len(runs(owns, "cli")) == 1
    record = orjson.loads((spool_dir / "status" / "mine.hook").read_bytes())
    assert record["exit_codes"] == [0, 0] and record["exit_code"] == 0


def test_a_jobs_own_hook_needs_a_manager_that_allows_commands(spool_dir: Path, tmp_path: Path) -> None:
    server = Server(spool_dir).start()
    try:
        drop(spool_dir, "own.json", job("add", 1, 1, id="own", on_finish=["true"]))
        wait_until(lambda: any(r["name"] == "own.json" for r in Spool(spool_dir).rejections()), 30, "own rejected")
    finally:
        assert server.stop() == 0
    [rejected] = Spool(spool_dir).rejections()
    assert "'on_finish' runs a command; start the manager with --allow-commands" in rejected["reason"]
