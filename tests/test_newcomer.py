"""What a new user tripped over, each driven as that user would: the CLI in a shell, a
Python loop, Ctrl-C at a terminal."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import click
import orjson
import pytest
from conftest import (
    POOL,
    TESTS,
    Server,
    drop,
    env_for_tests,
    job,
    made,
    pid_alive,
    running_pid,
    run_pool,
    start_running,
    state_of,
    status_doc,
    wait_until,
)
from pool.cli import render
from rich.console import Console
from test_views import on_terminal, read_screen

from pool import JobRejected, lifecycle
from pool.client import Spool
from pool.jobfile import parse_job
from pool.model import JobStatus, new_status

FINAL = ("done", "failed", "cancelled")


def log_of(spool_dir: Path, job_id: str) -> str:
    return (spool_dir / "logs" / f"{job_id}.log").read_text()


# ---------------------------------------------------------------- 1. where it runs, and with what

SHOW = ["sh", "-c", 'pwd; echo "MYVAR=$MYVAR"']


def test_a_command_runs_where_it_was_submitted_with_the_callers_environment(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    here = tmp_path / "here"
    (here / "sub").mkdir(parents=True)
    expected = f"{here}\nMYVAR=x\n"
    # Inline, no manager: as subprocess.run would from here.
    inline = run_pool(spool_dir, "run", "--id", "inline", "--", *SHOW, cwd=here, env={"MYVAR": "x"})
    assert inline.returncode == 0, inline.stderr
    assert log_of(spool_dir, "inline") == expected
    # Through a manager that runs elsewhere (tests/), with another environment: the same.
    serve("--allow-commands")
    served = run_pool(spool_dir, "run", "--id", "served", "--", *SHOW, cwd=here, env={"MYVAR": "x"})
    assert served.returncode == 0, served.stderr
    assert log_of(spool_dir, "served") == expected
    # --cwd is taken from where the command line was typed.
    run_pool(spool_dir, "submit", "--command", "--id", "rel", "--cwd", "sub", "--", "pwd", cwd=here, check=True)
    wait_until(lambda: state_of(spool_dir, "rel") in FINAL, what="rel")
    assert log_of(spool_dir, "rel") == f"{here / 'sub'}\n"
    # A job file dropped by hand keeps its meaning: the manager's directory and environment.
    drop(spool_dir, "hand.json", {"command": SHOW, "id": "hand"})
    wait_until(lambda: state_of(spool_dir, "hand") in FINAL, what="hand")
    assert log_of(spool_dir, "hand") == f"{TESTS}\nMYVAR=\n"


def test_a_loader_variable_the_submitter_merely_had_is_left_out_unless_allowed(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    show = ["sh", "-c", 'echo "LD=$LD_LIBRARY_PATH"']
    serve("--allow-commands")
    result = run_pool(spool_dir, "run", "--id", "ld", "--", *show, env={"LD_LIBRARY_PATH": "/opt/lib"})
    assert result.returncode == 0, result.stderr  # not refused: the user did not ask for it
    assert log_of(spool_dir, "ld").splitlines() == [
        "pool: not passed from the submitter's environment: LD_LIBRARY_PATH "
        "(loader variables need `pool serve --allow-loader-env`)", "LD="]


# ---------------------------------------------------------------- 2. submission order

def test_jobs_start_in_the_order_they_were_submitted_also_after_a_restart(
        spool_dir: Path, tmp_path: Path) -> None:
    gate, order = tmp_path / "gate", tmp_path / "order"
    server = Server(spool_dir, "--workers", "1", "--grace", "0.2").start()
    spool = Spool(spool_dir)
    try:
        spool.submit("pooltest_tasks:hold", str(gate), id="first")
        wait_until(lambda: state_of(spool_dir, "first") == "running", what="the worker busy")
        ids = [spool.submit("pooltest_tasks:record_order", str(order)).id for _ in range(12)]  # random ids
        wait_until(lambda: all(state_of(spool_dir, i) == "queued" for i in ids), what="all taken in")
        assert server.stop() == 0  # queued jobs (and the one interrupted) wait for the next manager
        server = Server(spool_dir, "--workers", "1").start()
        gate.touch()
        wait_until(lambda: all(state_of(spool_dir, i) == "done" for i in ids), what="all done")
    finally:
        gate.touch()
        server.stop()
    assert order.read_text().split() == ids


# ---------------------------------------------------------------- 3. rejections, where people look

def test_a_refused_job_is_said_at_once_and_listed(spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve()
    result = run_pool(spool_dir, "submit", "--id", "nope", "nosuch:task")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "job 'nope' was rejected" in result.stderr and "not in a served module" in result.stderr
    table = run_pool(spool_dir, "status", check=True)
    assert "1 file(s) rejected in the last day (pool status --state rejected)" in table.stdout
    listed = run_pool(spool_dir, "status", "--state", "rejected", check=True)
    assert "rejected/nope.json: job 'nope' in nope.json: task 'nosuch:task' is not in a served module" in listed.stdout
    assert orjson.loads(run_pool(spool_dir, "status", "--state", "rejected", "--json", check=True).stdout)[0][
        "file"] == "nope.json"
    with pytest.raises(JobRejected) as info:
        Spool(spool_dir).job("nope").wait(timeout=5)
    assert "not in a served module" in info.value.reason


# ---------------------------------------------------------------- 4. no manager, and orphans

def test_no_manager_is_said_in_one_line_where_people_look(spool_dir: Path) -> None:
    made(spool_dir)
    submitted = run_pool(spool_dir, "submit", "--id", "w1", "pooltest_tasks:add", "1", "2", check=True)
    assert submitted.stdout == "w1\n"
    assert submitted.stderr == (f"pool: no manager is serving {spool_dir}; the job waits in incoming/ "
                                "until `pool serve` runs\n")
    shown = run_pool(spool_dir, "status", check=True)
    assert "w1" in shown.stdout and "no manager is serving" in shown.stderr
    as_json = run_pool(spool_dir, "status", "--json", check=True)
    assert as_json.stderr == "" and orjson.loads(as_json.stdout)[0]["id"] == "w1"
    waited = run_pool(spool_dir, "wait", "--timeout", "0.3", "w1")
    assert waited.returncode == 1 and "no manager is serving" in waited.stderr and "waiting for one" in waited.stderr


def test_a_job_whose_manager_and_worker_were_killed_shows_as_orphaned(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    server = serve()
    drop(spool_dir, "o.json", {"task": "pooltest_tasks:forever", "id": "o"})
    pid = wait_until(lambda: (d := status_doc(spool_dir, "o")) and d["state"] == "running" and d["pid"],
                     what="running written")
    server.stop(signal.SIGKILL)
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), what="the worker gone")
    table = run_pool(spool_dir, "status", check=True).stdout
    row = next(line for line in table.splitlines() if line.startswith("o "))
    assert "orphaned" in row and "running" not in row and "%/" not in row
    assert table.splitlines()[-1].startswith("1 orphaned")  # the summary does not count it running
    assert "the next manager runs it again" in run_pool(spool_dir, "status", "o", check=True).stdout


# ---------------------------------------------------------------- 5. options after the program

@pytest.mark.parametrize("argv", [["ls", "-q"], ["ffmpeg", "-i", "in.mp4", "--name", "foo.mp4"],
                                  ["rsync", "--timeout", "30", "a/", "b/"]])
def test_options_after_the_program_belong_to_the_program(spool_dir: Path, argv: list[str]) -> None:
    made(spool_dir)
    job_id = run_pool(spool_dir, "submit", "--command", *argv, check=True).stdout.strip()
    doc = orjson.loads((spool_dir / "incoming" / f"{job_id}.json").read_bytes())
    assert doc["command"] == argv
    assert doc.get("timeout") is None and doc["name"] == argv[0]


# ---------------------------------------------------------------- 6. 80 columns

def statuses_for_a_small_terminal() -> list[JobStatus]:
    now = "2027-01-15T08:00:00.000000Z"
    made = []
    for n in range(30):
        status = new_status(parse_job({"task": "m:f", "id": f"job-{n:02d}-4f2a9c81",
                                       "name": "transcode the long file name of a holiday video.mp4"}, "x", "x"), now)
        if n % 3 == 0:
            status = lifecycle.start(status, 1, None, now)
            status = status.__class__(**{**{f: getattr(status, f) for f in status.__dataclass_fields__},
                                         "progress": 0.4, "message": "frame= 1234 fps=30 time=00:01:23.45 " * 3})
        elif n % 3 == 1:
            status = lifecycle.succeed(lifecycle.start(status, 1, None, now), 1, now)
        made.append(status)
    return made


def test_a_table_fits_80_columns_with_ids_and_states_whole() -> None:
    statuses = statuses_for_a_small_terminal()
    out = Console(width=80, record=True, no_color=True)
    out.print(render.status_table(statuses, datetime(2027, 1, 15, 8, 1, tzinfo=timezone.utc), width=80))
    lines = out.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines)
    for status in statuses:
        row = next(line for line in lines if line.startswith(status.id + " "))
        assert status.state.value in row.split()  # the state, whole
    assert any("…" in line for line in lines[1:])  # the name and message gave way


def test_more_jobs_than_rows_keep_the_running_ones_and_say_how_many_more() -> None:
    statuses = statuses_for_a_small_terminal()
    shown, more = render.fit(statuses, 12)
    assert more == 18 and len(shown) == 12
    assert [s.state.value for s in shown[:10]] == ["running"] * 10
    out = Console(width=80, record=True, no_color=True)
    out.print(render.status_table(shown, datetime(2027, 1, 15, 8, 1, tzinfo=timezone.utc), more=more, width=80))
    assert "…and 18 more" in out.export_text()


# ---------------------------------------------------------------- 7. the message follows the program

FFMPEG_LIKE = r"""
import sys
sys.stderr.write("  Duration: 00:01:00.00, start: 0.000000, bitrate: 1200 kb/s\n")
for second in (0, 15, 30, 49):
    sys.stderr.write(f"frame={second * 25:5d} fps= 25 q=28.0 size=  {second * 40:5d}kB time=00:00:{second:02d}.00 "
                     "bitrate= 341.0kbits/s speed=1.0x    \r")
"""


def test_the_message_follows_the_program_to_its_latest_line(spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve("--allow-commands")
    run_pool(spool_dir, "run", "--id", "ff", "--", sys.executable, "-c", FFMPEG_LIKE, check=True)
    doc = status_doc(spool_dir, "ff")
    assert doc is not None and doc["message"].startswith("frame= 1225") and "time=00:00:49.00" in doc["message"]


# ---------------------------------------------------------------- 8. Ctrl-C while waiting

def test_ctrl_c_while_waiting_leaves_the_job_running_and_says_how_to_stop_it(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve()
    gate = tmp_path / "gate"
    start_running(spool_dir, "c", "hold", str(gate))
    waiting, leader = on_terminal(spool_dir, "wait", "c", columns=100, lines=20)
    try:
        read_screen(leader, lambda s: "running" in s)  # the live view is up: it is waiting
        os.write(leader, b"\x03")  # Ctrl-C, through the terminal
        screen = read_screen(leader, lambda s: "pool kill c" in s)
        assert waiting.wait(timeout=30) == 130
    finally:
        if waiting.poll() is None:
            waiting.send_signal(signal.SIGKILL)
        os.close(leader)
    assert "c keeps running (stop with: pool kill c)" in screen and "Traceback" not in screen
    assert state_of(spool_dir, "c") == "running"
    gate.touch()


# ---------------------------------------------------------------- 9. first errors

def test_first_errors_say_what_to_do(tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere"
    for args in (["status"], ["wait", "x"], ["wait", "--all"], ["logs", "x"], ["result", "x"], ["kill", "abc"],
                 ["submit", "pooltest_tasks:add", "1", "2"], ["submit", "--command", "true"]):
        result = run_pool(nowhere, *args)
        assert result.returncode == 1, args
        assert result.stderr == f"Error: no spool at {nowhere} (start `pool serve`, or pass --spool)\n", args
    assert not nowhere.exists()  # a mistyped --spool makes no spool
    spool_dir = made(tmp_path / "spool")
    run_pool(spool_dir, "submit", "--id", "s1", "pooltest_tasks:add", "1", "1", check=True)
    after = subprocess.run([*POOL, "status", "--spool", str(spool_dir), "s1"], capture_output=True, text=True,
                           env=env_for_tests(), cwd=tmp_path)
    assert after.returncode == 0 and "id:        s1" in after.stdout  # --spool after the subcommand


def test_the_readmes_drop_example_gives_an_id_to_type(spool_dir: Path, serve: Callable[..., Server]) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    line = next(line for line in readme.splitlines() if line.startswith("echo '{") and "incoming/" in line)
    serve()
    command = line.replace("mytasks:render", "pooltest_tasks:add").replace("[42]", "[40, 2]").split("  #")[0]
    subprocess.run(["sh", "-c", command], cwd=spool_dir.parent, check=True)
    wait_until(lambda: state_of(spool_dir, "r42") == "done", what="the job the README drops, by the id it gives")


# ---------------------------------------------------------------- 10. results from the shell

def test_results_from_the_shell_as_json(spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve()
    run_pool(spool_dir, "submit", "--id", "e", "--kw", "flag=true", "pooltest_tasks:echo", "42", "text", check=True)
    run_pool(spool_dir, "wait", "e", check=True)
    assert orjson.loads(run_pool(spool_dir, "result", "e", check=True).stdout) == {
        "args": [42, "text"], "kwargs": {"flag": True}}
    run_pool(spool_dir, "submit", "--id", "f", "pooltest_tasks:fail", "boom")
    run_pool(spool_dir, "wait", "f")
    failed = run_pool(spool_dir, "result", "f")
    assert failed.returncode == 1 and failed.stdout == "" and failed.stderr == "Error: job 'f' failed: ValueError: boom\n"
    assert run_pool(spool_dir, "run", "pooltest_tasks:add", "2", "3", check=True).stdout == "5\n"
    detail = run_pool(spool_dir, "status", "e", check=True).stdout
    assert 'args:      [42,"text"]' in detail and 'kwargs:    {"flag":true}' in detail
    assert 'result:    {"args":[42,"text"],"kwargs":{"flag":true}}' in detail


def test_a_command_is_shown_quoted_as_a_shell_would_need_it(spool_dir: Path) -> None:
    made(spool_dir)
    job_id = run_pool(spool_dir, "submit", "--command", "sh", "-c", "echo 'a b'", check=True).stdout.strip()
    assert "command:   sh -c 'echo '\"'\"'a b'\"'\"''" in run_pool(spool_dir, "status", job_id, check=True).stdout


def test_the_detail_view_drops_what_would_ring_or_move_the_terminals_cursor(spool_dir: Path) -> None:
    made(spool_dir)
    job_id = run_pool(spool_dir, "submit", "--name", "bell\abackspace\b", "--command", "true",
                      check=True).stdout.strip()
    shown = run_pool(spool_dir, "status", job_id, check=True).stdout
    assert "name:      bellbackspace\n" in shown and "\a" not in shown and "\b" not in shown


def test_a_command_imports_only_what_it_needs(spool_dir: Path) -> None:
    # `pool status ID` or `pool submit` in a script's loop pays for its imports each time:
    # not for rich's tables, the manager, the dashboard or the worker (benchmarks/cli_start.py).
    made(spool_dir)
    job_id = run_pool(spool_dir, "submit", "--command", "true", check=True).stdout.strip()
    heavy = ("rich", "pool.manager", "pool.cli.serve", "pool.cli.web", "pool.cli.worker", "celery", "starlette")
    for argv in (["status", job_id], ["submit", "--command", "true"], ["logs", job_id], ["kill", job_id]):
        code = ("import sys, warnings\nfrom pool.cli.main import cli\nwarnings.simplefilter('ignore')\n"
                f"cli({['--spool', str(spool_dir), *argv]!r}, standalone_mode=False)\n"
                f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r} or m in {heavy!r}))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env_for_tests(),
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == "[]", argv


# ---------------------------------------------------------------- 11. smaller things

def test_an_attempt_beyond_the_retries_reads_as_a_rerun_after_a_crash() -> None:
    status = lifecycle.start(new_status(parse_job({"task": "m:f", "id": "c"}, "x", "x"), "2027-01-15T08:00:00.000000Z"),
                             1, None, "2027-01-15T08:00:00.000000Z")
    rerun = status.__class__(**{**{f: getattr(status, f) for f in status.__dataclass_fields__}, "attempt": 2})
    now = datetime(2027, 1, 15, 8, 0, 1, tzinfo=timezone.utc)
    assert render.state_text(rerun, now) == "running (rerun after a crash)"


def test_a_job_put_back_shows_nothing_of_the_attempt_before(spool_dir: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    server = Server(spool_dir, "--grace", "0.1").start()
    try:
        run_pool(spool_dir, "submit", "--id", "back", "pooltest_tasks:halfway", str(gate), check=True)
        wait_until(lambda: (d := status_doc(spool_dir, "back")) and d["progress"] == 0.3, what="30% on disk")
    finally:
        assert server.stop() == 0  # its grace runs out: the attempt is put back, uncounted
    doc = status_doc(spool_dir, "back")
    assert doc is not None and (doc["state"], doc["progress"], doc["started_at"]) == ("queued", None, None)
    row = next(line for line in run_pool(spool_dir, "status", check=True).stdout.splitlines()
               if line.startswith("back "))
    # No old bar, no elapsed time still counting: between the state and the message, an empty bar only.
    assert row.split()[2:4] == ["queued", "····················"] and row.split()[4] == "interrupted"
    gate.touch()


def test_a_manager_stopped_from_its_terminal_leaves_no_warning_behind(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    manager = serve(new_session=True)
    run_pool(spool_dir, "run", "pooltest_tasks:add", "1", "1", check=True)
    assert manager.proc is not None
    os.killpg(manager.proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
    assert manager.proc.wait(timeout=30) == 0
    text = manager.output()
    assert "stopped" in text and "leaked" not in text and "Traceback" not in text


def test_the_demo_says_next_what_can_be_typed_here(tmp_path: Path) -> None:
    result = subprocess.run([*POOL, "demo", "--kill-after", "0.5"], capture_output=True, text=True,
                            env=env_for_tests(), cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr
    next_line = next(line for line in result.stdout.splitlines() if line.startswith("Next:"))
    typed = next_line.split("`")[1].split(" serve ")[0].split()
    program = typed[0]
    assert shutil.which(program) or (tmp_path / program).exists() or Path(program).exists(), next_line


# ---------------------------------------------------------------- a folder with its own `pool`
SHADOWS = {
    "module": {"pool.py": 'raise SystemExit("the user\'s own pool.py was imported in pool\'s place")\n'},
    "clone": {"pool/pool/__init__.py": "raise SystemExit('a clone of pool was imported in its place')\n",
              "pool/cli/__init__.py": ""},  # a clone named pool: a folder, no __init__.py of its own
}


def console_script() -> str:
    """The `pool` command as installed beside this Python (what a user types)."""
    return str(Path(sys.executable).parent / "pool")


@pytest.mark.parametrize("shadow", list(SHADOWS))
def test_a_pool_of_the_users_own_in_the_folder_changes_nothing(tmp_path: Path, shadow: str) -> None:
    """A `pool.py` or a `pool/` folder in the working directory was imported in pool's
    place by its workers: `pool serve` there respawned them in a tight loop (254
    tracebacks in 4 s) while every job stayed queued, and `pool run -- echo hi` hung."""
    here = tmp_path / "project"
    for name, text in {**SHADOWS[shadow], "mytasks.py": "import pool\n\n@pool.task\ndef hi() -> str:\n"
                                                        "    return 'hi'\n"}.items():
        (here / name).parent.mkdir(parents=True, exist_ok=True)
        (here / name).write_text(text)
    env = env_for_tests()
    env.pop("PYTHONPATH")  # as a user would have it: the installed pool, and nothing more
    ran = subprocess.run([console_script(), "--spool", str(tmp_path / "inline"), "run", "-q", "--", "echo", "hi"],
                         cwd=here, env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        manager = subprocess.Popen([console_script(), "--spool", str(tmp_path / "spool"), "serve", "--tasks",
                                    "mytasks", "--workers", "1"], cwd=here, env=env, stdout=out, stderr=out)
    try:
        wait_until(lambda: (tmp_path / "spool" / "manager.pid").exists() or manager.poll() is not None, 30,
                   "the manager serving")
        done = subprocess.run([console_script(), "--spool", str(tmp_path / "spool"), "run", "mytasks:hi"],
                              cwd=here, env=env, capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stdout) == (0, '"hi"\n'), done.stderr + log.read_text()
    finally:
        manager.terminate()
        manager.wait(timeout=60)
    assert "Traceback" not in log.read_text()


def test_workers_that_cannot_start_are_not_restarted_in_a_tight_loop(tmp_path: Path) -> None:
    """A worker that cannot start is a clear error that the manager waits on before it
    tries again (twice as long each time), and `pool status` says so, never a loop of
    tracebacks."""
    here = tmp_path / "here"
    here.mkdir()
    spool_dir = tmp_path / "spool"
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        manager = subprocess.Popen([*POOL, "--spool", str(spool_dir), "serve", "--workers", "1"], cwd=here,
                                   env=env_for_tests(), stdout=out, stderr=out)
    try:
        wait_until(lambda: (spool_dir / "manager.pid").exists(), 30, "the manager serving")
        here.rmdir()  # the working directory jobs run in is gone: a worker cannot start there
        for forkserver in process_children(manager.pid):  # its workers are its forkserver's children
            for worker in process_children(forkserver):
                os.kill(worker, signal.SIGKILL)
        said = wait_until(lambda: "cannot run jobs now" in (r := run_pool(spool_dir, "status")).stdout and r.stdout,
                          60, "pool status to say that workers cannot start")
        assert "workers in a row" in said and "before they were ready" in said
        failed = log.read_text().count("Traceback")
        assert failed <= 6, f"{failed} tracebacks: a tight loop"
        here.mkdir()
        wait_until(lambda: "cannot run jobs now" not in run_pool(spool_dir, "status").stdout, 60,
                   "workers starting again")
    finally:
        manager.terminate()
        manager.wait(timeout=60)


def process_children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


# ---------------------------------------------------------------- what was not asked is not done
@pytest.mark.parametrize("args, said", [
    (["submit", "--command", "--retry", "2", "--", "ls"], "No such option '--retry'"),
    (["submit", "--retry", "2", "pooltest_tasks:add", "1", "2"], "'--retries'"),
    (["run", "--tmeout", "5", "pooltest_tasks:add", "1", "2"], "Did you mean one of: '--memory', '--meta', '--timeout'"),
    (["submit", "crunch", "10"], "a program runs with --command first (pool submit --command crunch ...)"),
    (["submit", "--priority", "1", "--priority", "2", "pooltest_tasks:add", "1", "2"],
     "--priority is given more than once"),
    (["status", "--limit", "5", "--limit", "6"], "--limit is given more than once"),
])
def test_a_mistyped_option_is_a_usage_error_never_the_job(spool_dir: Path, args: list[str], said: str) -> None:
    """`pool submit --command --retry 2 -- ls` printed an id, and the job failed later with
    "cannot start '--retry'"; `pool run --tmeout 5 mytasks:crunch 10` ran a command named
    --tmeout; an option given twice kept its last value in silence."""
    made(spool_dir)
    result = run_pool(spool_dir, *args)
    assert result.returncode == 2 and said in result.stderr, result.stderr
    assert not list((spool_dir / "incoming").iterdir())  # nothing was submitted


def test_after_two_dashes_a_program_may_start_with_a_dash_and_states_add_up(spool_dir: Path) -> None:
    made(spool_dir)
    job_id = run_pool(spool_dir, "submit", "--command", "--", "-x", check=True).stdout.strip()
    assert orjson.loads((spool_dir / "incoming" / f"{job_id}.json").read_bytes())["command"] == ["-x"]
    run_pool(spool_dir, "kill", job_id, check=True)  # cancelled before any manager took it
    shown = run_pool(spool_dir, "status", "--state", "queued", "--state", "cancelled", "--json", check=True).stdout
    assert [d["state"] for d in orjson.loads(shown)] == ["cancelled"]


def test_the_python_client_says_when_no_manager_serves(spool_dir: Path) -> None:
    """`spool.submit_command([...])` stayed queued and `job.wait()` blocked for ever, in
    silence, next to the guide's "runs inline"."""
    import pool

    spool = pool.Spool(made(spool_dir))
    with pytest.warns(pool.NoManagerWarning, match="no manager is serving .*fallback='inline'"):
        job = spool.submit_command(["true"])
    with pytest.raises(pool.WaitTimeout, match=f"no manager is serving {spool_dir}"):
        job.wait(timeout=0.2)


# ---------------------------------------------------------------- output people read and parse
LONG_ID = "c464fa8c0d2b4e51-transcode-of-the-whole-holiday"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def ended_with_long_names(spool_dir: Path, tmp_path: Path) -> None:
    """A job done at 100% and one cancelled, both with a long id and a long name."""
    drop(spool_dir, "d.json", {"task": "pooltest_tasks:add", "args": [1, 1], "id": LONG_ID,
                               "name": "convert 1 of the long holiday video.mp4 " * 3})
    wait_until(lambda: state_of(spool_dir, LONG_ID) == "done", what="done")
    start_running(spool_dir, LONG_ID + "-2", "halfway", str(tmp_path / "never"))
    run_pool(spool_dir, "kill", LONG_ID + "-2", check=True)


def test_piped_status_cuts_nothing(spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve()
    ended_with_long_names(spool_dir, tmp_path)
    piped = run_pool(spool_dir, "status", check=True, env={"COLUMNS": "80"}).stdout
    assert "…" not in piped
    rows = {line.split()[0]: line.split() for line in piped.splitlines()[1:] if line.startswith(LONG_ID)}
    assert "done" in rows[LONG_ID] and "100%" in rows[LONG_ID]
    assert "cancelled" in rows[LONG_ID + "-2"]
    assert len(piped.splitlines()) == 4  # header, two rows, the footer on one line


CURSOR_MOVES = re.compile(r"\x1b\[[0-9;?]*[ABKJ]")  # up, down, erase: a redraw starts a line there


def screen_lines(screen: str) -> list[str]:
    """Every line a terminal was shown, as plain text (a line redrawn in place counts
    once each time: colours taken out, a cursor move or an erase ends a line)."""
    return [line for line in re.split(r"\r?\n|\r", ANSI.sub("", CURSOR_MOVES.sub("\n", screen))) if line]


def test_on_a_terminal_ids_and_states_are_never_cut(spool_dir: Path, serve: Callable[..., Server],
                                                    tmp_path: Path) -> None:
    serve()
    ended_with_long_names(spool_dir, tmp_path)
    status, leader = on_terminal(spool_dir, "status", columns=80, lines=30)
    try:
        lines = screen_lines(read_screen(leader, lambda s: "1 done, 1 cancelled" in s))
    finally:
        status.wait(timeout=60)
        os.close(leader)
    rows = {line.split()[0]: line.split() for line in lines if line.startswith(LONG_ID)}
    assert "done" in rows[LONG_ID] and "100%" in rows[LONG_ID] and "cancelled" in rows[LONG_ID + "-2"]
    assert all(len(line) <= 80 for line in lines)
    assert any("…" in line for line in lines)  # what gave way is what may


@pytest.mark.parametrize("columns", [80, 100])
def test_the_demo_reads_well_on_a_small_terminal(tmp_path: Path, columns: int) -> None:
    from pool.cli.demo import EXPECTED

    demo, leader = on_terminal(tmp_path / "unused", "demo", "--spool", str(tmp_path / "demo"), "--kill-after", "0.5",
                               columns=columns, lines=30)
    try:
        lines = screen_lines(read_screen(leader, lambda s: "try `" in s, timeout=170))
    finally:
        demo.wait(timeout=60)
        os.close(leader)
    assert demo.returncode == 0, "\n".join(lines[-30:])
    assert all(len(line) <= columns for line in lines), max(lines, key=len)
    # The last frame: from the last header on (headers of one width are the same text, so
    # it is found by its place, never by its text).
    last = lines[max(i for i, line in enumerate(lines) if line.startswith("ID ")):]
    for job_id, state in EXPECTED.items():
        row = next((line.split() for line in last if line.startswith(job_id + " ")), None)
        assert row is not None and state.value in row, f"{job_id}: {row} in\n" + "\n".join(last)


# ---------------------------------------------------------------- priorities and jobs sent ahead
def test_a_higher_priority_starts_first_even_when_jobs_were_sent_ahead(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    """Both workers busy, each with a priority-0 job sent ahead to it: a priority-5 job
    arriving now starts on the first worker free, before them; theirs are taken back,
    uncounted."""
    manager = serve("--workers", "2")
    gates = {name: tmp_path / f"gate-{name}" for name in ("a", "b", "rest")}
    start_running(spool_dir, "a", "hold", str(gates["a"]))
    start_running(spool_dir, "b", "hold", str(gates["b"]))
    for name, priority in (("low-1", 0), ("low-2", 0), ("high", 5)):
        drop(spool_dir, f"{name}.json", job("hold", str(gates["rest"]), id=name, priority=priority))
        wait_until(lambda: state_of(spool_dir, name) == "queued", what=f"{name} taken in")  # noqa: B023
    wait_until(lambda: any("taken back for it" in line and "low-1" in line and "low-2" in line
                           for line in manager.output().splitlines()), what="the jobs sent ahead taken back")
    gates["a"].touch()
    waiting = ("low-1", "low-2", "high")
    wait_until(lambda: "running" in [state_of(spool_dir, name) for name in waiting], what="the next job running")
    assert [state_of(spool_dir, name) for name in waiting] == ["queued", "queued", "running"]
    gates["b"].touch()
    gates["rest"].touch()
    for name in waiting:
        wait_until(lambda: state_of(spool_dir, name) == "done", what=f"{name} done")  # noqa: B023
    assert [status_doc(spool_dir, name)["attempt"] for name in waiting] == [1, 1, 1]  # type: ignore[index]


def test_a_job_sent_ahead_to_a_busy_worker_runs_on_the_next_worker_free(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    """Both workers busy: a job arriving is sent ahead to one of them (the first: the one
    whose job came first, here the long one). The other worker comes free first: the job
    runs there, at once, not after the long job. (It once waited for the long one, while a
    worker stood idle: a CI failure of test_limits at 8d08124.)"""
    serve("--workers", "2")
    long_gate, short_gate = tmp_path / "long", tmp_path / "short"
    start_running(spool_dir, "long", "hold", str(long_gate))
    start_running(spool_dir, "short", "hold", str(short_gate))
    drop(spool_dir, "next.json", job("add", 1, 2, id="next"))
    wait_until(lambda: state_of(spool_dir, "next") == "queued", what="next taken in")
    short_gate.touch()
    wait_until(lambda: state_of(spool_dir, "next") == "done", what="next done while the long job runs")
    assert state_of(spool_dir, "long") == "running"
    assert (status_doc(spool_dir, "next") or {})["attempt"] == 1
    long_gate.touch()
    wait_until(lambda: state_of(spool_dir, "long") == "done", what="the long job done")


# ---------------------------------------------------------------- stopping and restarting keep the work
def test_stop_says_what_it_waits_for_and_gives_running_jobs_the_grace(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    manager = serve("--grace", "120")
    gate = tmp_path / "gate"
    start_running(spool_dir, "r", "hold", str(gate))
    said = run_pool(spool_dir, "stop", "--no-wait", check=True).stdout
    assert said.splitlines()[0] == (
        f"stopping the manager (pid {manager.pid}): 1 running job (r) gets up to 120s to end, then is stopped and "
        "queued again (--drain waits for them, --detach leaves them running)")
    gate.touch()  # it ends within the grace: done, and the manager stops
    assert manager.proc is not None and manager.proc.wait(timeout=60) == 0
    doc = status_doc(spool_dir, "r")
    assert doc is not None and (doc["state"], doc["attempt"], doc["interruptions"]) == ("done", 1, 0)


def test_drain_waits_for_running_jobs_and_starts_nothing_new(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    manager = serve("--workers", "1", "--grace", "0")  # a drain has no grace to run out
    gate = tmp_path / "gate"
    start_running(spool_dir, "r", "hold", str(gate))
    drop(spool_dir, "q.json", job("add", 1, 2, id="q"))
    wait_until(lambda: state_of(spool_dir, "q") == "queued", what="q taken in")
    stopper = subprocess.Popen([*POOL, "--spool", str(spool_dir), "stop", "--drain"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env_for_tests())
    try:
        wait_until(lambda: "draining" in manager.output(), what="the manager draining")
        assert stopper.poll() is None and manager.proc is not None and manager.proc.poll() is None
        assert (state_of(spool_dir, "r"), state_of(spool_dir, "q")) == ("running", "queued")
        assert "the manager is stopping (drain): nothing new starts" in run_pool(spool_dir, "status").stdout
        gate.touch()
        out, err = stopper.communicate(timeout=60)
    finally:
        if stopper.poll() is None:
            stopper.kill()
    assert stopper.returncode == 0, err
    assert out.splitlines() == [
        f"draining the manager (pid {manager.pid}): nothing new starts; it stops once 1 running job (r) ends",
        f"manager (pid {manager.pid}) stopped"]
    doc = status_doc(spool_dir, "r")
    assert doc is not None and (doc["state"], doc["attempt"], doc["interruptions"]) == ("done", 1, 0)
    assert state_of(spool_dir, "q") == "queued"  # for the next manager


def test_detach_leaves_running_jobs_to_the_next_manager_and_begins_nothing_sent_ahead(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    manager = serve("--workers", "1")
    gate = tmp_path / "gate"
    worker = start_running(spool_dir, "r", "hold", str(gate))
    drop(spool_dir, "q.json", job("add", 1, 2, id="q"))  # sent ahead to r's worker
    wait_until(lambda: state_of(spool_dir, "q") == "queued", what="q taken in")
    said = run_pool(spool_dir, "stop", "--detach", check=True).stdout
    assert said.splitlines() == [
        f"stopping the manager (pid {manager.pid}) now: 1 running job (r) runs on, for the next `pool serve` to take "
        "over", f"manager (pid {manager.pid}) stopped"]
    assert manager.proc is not None and manager.proc.wait(timeout=30) == 0
    assert pid_alive(worker) and state_of(spool_dir, "r") == "running"
    gate.touch()  # r ends with no manager: its worker writes it, and then begins nothing
    wait_until(lambda: not pid_alive(worker), what="r's worker gone")
    assert (state_of(spool_dir, "r"), state_of(spool_dir, "q")) == ("done", "queued")
    serve("--workers", "1")
    wait_until(lambda: state_of(spool_dir, "q") == "done", what="q run by the next manager")
    doc = status_doc(spool_dir, "r")
    assert doc is not None and (doc["attempt"], doc["interruptions"]) == (1, 0)


def test_a_detached_job_still_running_is_taken_over_by_the_next_manager(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve()
    gate = tmp_path / "gate"
    worker = start_running(spool_dir, "r", "hold", str(gate))
    run_pool(spool_dir, "stop", "--detach", check=True)
    serve()
    assert pid_alive(worker) and state_of(spool_dir, "r") == "running"
    gate.touch()
    wait_until(lambda: state_of(spool_dir, "r") == "done", what="r done under the next manager")
    doc = status_doc(spool_dir, "r")
    assert doc is not None and (doc["attempt"], doc["interruptions"]) == (1, 0)


def test_the_number_of_workers_changes_without_a_restart(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve("--workers", "1")
    assert run_pool(spool_dir, "workers", check=True).stdout == "1 workers\n"
    gates = {name: tmp_path / f"gate-{name}" for name in "abcd"}
    start_running(spool_dir, "a", "hold", str(gates["a"]))
    assert run_pool(spool_dir, "workers", "2", check=True).stdout == "2 workers from now on (were 1)\n"
    start_running(spool_dir, "b", "hold", str(gates["b"]))  # beside a: a second worker runs
    assert state_of(spool_dir, "a") == "running"
    assert run_pool(spool_dir, "workers", "1", check=True).stdout == "1 workers from now on (were 2)\n"
    gates["a"].touch()
    gates["b"].touch()
    for name in "ab":
        wait_until(lambda: state_of(spool_dir, name) == "done", what=f"{name} done")  # noqa: B023
    # One worker: d, arriving while c runs, waits for c and runs in the same process after it.
    c = start_running(spool_dir, "c", "hold", str(gates["c"]))
    drop(spool_dir, "d.json", job("hold", str(gates["d"]), id="d"))
    wait_until(lambda: state_of(spool_dir, "d") == "queued", what="d taken in")
    gates["c"].touch()
    assert running_pid(spool_dir, "d") == c
    gates["d"].touch()
    refused = run_pool(spool_dir, "workers", "0")
    assert refused.returncode == 2 and "0 is not in the range x>=1" in refused.stderr


# ---------------------------------------------------------------- docs and help
def test_the_top_level_help_starts_with_what_one_does_first_and_shows_examples(tmp_path: Path) -> None:
    shown = run_pool(tmp_path / "s", "--help", check=True).stdout
    sections = [line for line in shown.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert sections[:2] == ["Options:", "Start here:"]
    start_here = shown.split("Start here:")[1].split("\n\n")[0].split()
    assert [word for word in start_here if word in ("serve", "submit", "status")] == ["serve", "submit", "status"]
    listed = shown.split("Start here:")[1].split("Examples:")[0]
    assert "Examples:" in shown and "pool run -- " in shown and "..." not in listed  # no help cut short


def test_every_option_of_every_command_says_what_it_does() -> None:
    from pool.cli.main import cli

    context = click.Context(cli)
    commands = {name: cli.get_command(context, name) for name in cli.list_commands(context)}
    assert None not in commands.values() and {"serve", "status", "worker", "web", "restart"} <= set(commands)
    silent = [f"pool {name} {param.opts[0]}" for name, command in commands.items() for param in command.params
              if isinstance(param, click.Option) and not param.help and not param.hidden]
    assert silent == []
    top_help = " ".join(str(p.help) for p in commands["top"].params if isinstance(p, click.Option))
    assert "--json" not in top_help  # top has no --json


def test_the_readmes_picture_is_one_pool_draws(tmp_path: Path) -> None:
    picture = tmp_path / "status.svg"
    made_it = subprocess.run([sys.executable, str(TESTS.parent / "docs" / "screenshot.py"), str(picture)],
                             capture_output=True, text=True, env=env_for_tests(), cwd=tmp_path, timeout=180)
    assert made_it.returncode == 0, made_it.stderr
    drawn = picture.read_text()
    assert drawn.startswith("<svg") and "running" in drawn and "render-1" in drawn and "█" in drawn
    assert "![" in (TESTS.parent / "README.md").read_text().split("## Quick start")[0]  # shown on the first screen
    assert (TESTS.parent / "docs" / "status.svg").read_text().startswith("<svg")
