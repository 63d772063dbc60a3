"""Command jobs end to end: today's subprocess argv, run unchanged by ``pool serve --allow-commands``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import orjson
import pytest

from conftest import Server, drop, pid_alive, run_pool, state_of, status_doc, wait_until

PY = sys.executable


def command(argv: list[str], **fields: object) -> dict[str, object]:
    return {"command": argv, **fields}


def gate_script(before: str, gate: Path, after: str = "") -> list[str]:
    """A Python one-liner that prints ``before``, waits for the gate file, prints ``after``."""
    code = (f"import sys\nfrom waiting import wait_for_gate\nsys.stdout.write({before!r}); sys.stdout.flush()\n"
            f"wait_for_gate({str(gate)!r})\n"
            f"sys.stdout.write({after!r})\n")
    return [PY, "-c", code]


def running_doc(spool_dir: Path, job_id: str, predicate: Callable[[dict], bool] = lambda d: True) -> dict:
    return wait_until(lambda: (d := status_doc(spool_dir, job_id)) and d["state"] == "running" and predicate(d) and d,
                      what=f"{job_id} running")


@pytest.mark.every_engine
def test_output_streams_into_the_log_while_the_command_runs(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve("--allow-commands")
    gate = tmp_path / "gate"
    drop(spool_dir, "s.json", command(gate_script("first line\n", gate, "second line\n"), id="s"))
    log = spool_dir / "logs" / "s.log"
    wait_until(lambda: log.exists() and "first line" in log.read_text(), what="first line in the log")
    assert log.read_text() == "first line\n"  # shown while the command still runs (it waits on the gate)
    # `running` is written once a job has run 20 ms (a tiny job's outcome is its one write):
    # the first line may reach the log before it
    wait_until(lambda: state_of(spool_dir, "s") == "running", what="running")
    gate.touch()
    wait_until(lambda: state_of(spool_dir, "s") == "done", what="done")
    assert log.read_text() == "first line\nsecond line\n"
    assert status_doc(spool_dir, "s")["exit_code"] == 0  # type: ignore[index]


@pytest.mark.every_engine
def test_exit_codes_map_to_states(spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve("--allow-commands")
    drop(spool_dir, "ok.json", command(["true"], id="ok"))
    drop(spool_dir, "three.json", command(["sh", "-c", "echo oops >&2; exit 3"], id="three"))
    drop(spool_dir, "sig.json", command(["sh", "-c", "kill -9 $$"], id="sig"))
    for job_id, state in [("ok", "done"), ("three", "failed"), ("sig", "failed")]:
        wait_until(lambda: state_of(spool_dir, job_id) == state, what=f"{job_id} {state}")
    three, sig = status_doc(spool_dir, "three"), status_doc(spool_dir, "sig")
    assert three is not None and sig is not None
    assert (three["exit_code"], three["error"]["type"], three["error"]["message"]) == (
        3, "CommandFailed", "command exited with code 3")
    assert (spool_dir / "logs" / "three.log").read_text() == "oops\n"
    assert (sig["exit_code"], sig["error"]["message"]) == (-9, "command was killed by SIGKILL")


@pytest.mark.every_engine
def test_progress_is_read_live_from_percentages_tqdm_and_json_lines(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve("--allow-commands", "--workers", "3")
    gate = tmp_path / "gate"
    tqdm_code = (
        "from tqdm import tqdm\nfrom waiting import wait_for_gate\n"
        f"for i in tqdm(range(100), mininterval=0, ncols=60):\n"
        f"    if i == 45: wait_for_gate({str(gate)!r})\n")
    drop(spool_dir, "pct.json", command(gate_script("10%\n25%\n40% resizing\n", gate, "100%\n"), id="pct"))
    drop(spool_dir, "bar.json", command([PY, "-c", tqdm_code], id="bar"))
    drop(spool_dir, "js.json", command(gate_script('{"progress": 0.6, "message": "encoding"}\n', gate), id="js"))
    pct = running_doc(spool_dir, "pct", lambda d: d["progress"] is not None)
    assert (pct["progress"], pct["message"]) == (0.4, "40% resizing")
    bar = running_doc(spool_dir, "bar", lambda d: d["progress"] is not None and d["progress"] >= 0.45)
    assert bar["progress"] == 0.45
    js = running_doc(spool_dir, "js", lambda d: d["progress"] is not None)
    assert (js["progress"], js["message"]) == (0.6, "encoding")
    table = run_pool(spool_dir, "status", check=True).stdout
    assert " 40%" in table and " 45%" in table and " 60%" in table
    gate.touch()
    for job_id in ("pct", "bar", "js"):
        wait_until(lambda: state_of(spool_dir, job_id) == "done", what=f"{job_id} done")
    assert b"\r" in (spool_dir / "logs" / "bar.log").read_bytes()  # the raw bar is kept in the log


@pytest.mark.every_engine
def test_a_tqdm_loop_inside_a_task_shows_progress(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve()
    gate = tmp_path / "gate"
    drop(spool_dir, "t.json", {"task": "pooltest_tasks:tqdm_loop", "args": [str(gate)], "id": "t"})
    doc = running_doc(spool_dir, "t", lambda d: d["progress"] is not None and d["progress"] >= 0.4)
    assert doc["progress"] == 0.4 and doc["message"] == "tqdm loop"
    gate.touch()
    wait_until(lambda: state_of(spool_dir, "t") == "done", what="done")
    assert status_doc(spool_dir, "t")["result"] == 45  # type: ignore[index]


@pytest.mark.every_engine
def test_kill_takes_the_whole_process_tree(spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve("--allow-commands")
    pidfile = tmp_path / "grandchild"
    drop(spool_dir, "tree.json", command(["sh", "-c", f"sleep 1000 & echo $! > {pidfile}; wait"], id="tree"))
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), what="grandchild started")
    grandchild = int(pidfile.read_text())
    shell = wait_until(lambda: (d := status_doc(spool_dir, "tree")) and d["pid"], what="running written")
    assert pid_alive(grandchild)
    assert run_pool(spool_dir, "kill", "tree", check=True).stdout.strip() == "tree: cancelled"
    wait_until(lambda: not pid_alive(grandchild) and not pid_alive(shell), what="the whole tree gone")


@pytest.mark.every_engine
def test_what_a_finished_command_leaves_running_is_stopped(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve("--allow-commands")
    pidfile = tmp_path / "background"
    drop(spool_dir, "bg.json", command(["sh", "-c", f"sleep 1000 & echo $! > {pidfile}"], id="bg"))
    wait_until(lambda: state_of(spool_dir, "bg") == "done", what="done")
    wait_until(lambda: not pid_alive(int(pidfile.read_text())), what="the background sleep gone")


@pytest.mark.every_engine
def test_cwd_and_env_are_applied_and_pool_variables_are_set(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve("--allow-commands")
    workdir = tmp_path / "work"
    workdir.mkdir()
    script = 'pwd; echo "FOO=$FOO"; echo "JOB=$POOL_JOB_ID"; echo "SPOOL=$POOL_SPOOL"; echo "HOME=${HOME:+set}"'
    drop(spool_dir, "e.json", command(["sh", "-c", script], id="e", cwd=str(workdir), env={"FOO": "bar baz"}))
    wait_until(lambda: state_of(spool_dir, "e") == "done", what="done")
    assert (spool_dir / "logs" / "e.log").read_text().splitlines() == [
        str(workdir), "FOO=bar baz", "JOB=e", f"SPOOL={spool_dir}", "HOME=set"]


def test_without_allow_commands_nothing_runs(spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve()
    marker = tmp_path / "ran"
    drop(spool_dir, "c.json", command(["touch", str(marker)], id="c"))
    error = spool_dir / "rejected" / "c.json.error.json"
    wait_until(error.exists, what="rejected")
    assert "start the manager with --allow-commands" in orjson.loads(error.read_bytes())["reason"]
    assert not marker.exists() and state_of(spool_dir, "c") is None


@pytest.mark.every_engine
def test_a_command_that_cannot_start_fails_with_the_reason(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve("--allow-commands")
    # Looked up on a PATH of one folder without it: on the PATH the tests run with, a folder
    # the user may not enter (`su` keeps root's PATH) turns the reason into "Permission denied".
    drop(spool_dir, "m.json", command(["no-such-program-xyz", "--flag"], id="m", env={"PATH": str(tmp_path)}))
    drop(spool_dir, "d.json", command(["true"], id="d", cwd="/no/such/dir"))
    for job_id in ("m", "d"):
        wait_until(lambda: state_of(spool_dir, job_id) == "failed", what=f"{job_id} failed")
    m, d = status_doc(spool_dir, "m"), status_doc(spool_dir, "d")
    assert m is not None and d is not None
    assert m["error"]["type"] == "CommandNotStarted" and "No such file or directory" in m["error"]["message"]
    assert "'no-such-program-xyz'" in m["error"]["message"] and m["error"]["traceback"] is None
    assert d["error"]["message"] == "cannot start 'true': cwd '/no/such/dir' is not a directory"


@pytest.mark.every_engine
def test_cli_submit_command_logs_tail_and_follow(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve("--allow-commands")
    workdir = tmp_path / "w"
    workdir.mkdir()
    result = run_pool(spool_dir, "submit", "--command", "--id", "c1", "--cwd", str(workdir), "--env", "GREETING=hi",
                      "--", "sh", "-c", 'for i in 1 2 3 4 5; do echo "$GREETING $i"; done; pwd', check=True)
    assert result.stdout.strip() == "c1"
    run_pool(spool_dir, "wait", "c1", check=True)
    assert run_pool(spool_dir, "logs", "c1", "--tail", "2", check=True).stdout == f"hi 5\n{workdir}\n"
    gate = tmp_path / "gate"
    run_pool(spool_dir, "submit", "--command", "--id", "c2", "--", *gate_script("before\n", gate, "after\n"), check=True)
    log = spool_dir / "logs" / "c2.log"
    wait_until(lambda: log.exists() and log.read_text() == "before\n", what="first output")
    import subprocess

    from conftest import POOL, env_for_tests
    follower = subprocess.Popen([*POOL, "--spool", str(spool_dir), "logs", "-f", "c2"], stdout=subprocess.PIPE,
                                text=True, env=env_for_tests())
    gate.touch()
    out, _ = follower.communicate(timeout=60)
    assert follower.returncode == 0 and out == "before\nafter\n"


def test_an_environment_a_status_still_holds_is_kept_apart_and_the_job_runs_with_it(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    """A status written before environments were kept apart holds the values themselves:
    its job runs with them, and from then on they are kept apart like any other's."""
    from pool.client import Spool
    from pool.jobfile import parse_job
    from pool.model import new_status, utc_now

    Spool(spool_dir).dir.create()
    spec = parse_job(command(["sh", "-c", "echo $TOKEN"], id="old", caller_env={"TOKEN": "t0k", "PATH": "/bin"}),
                     "old.json", "old")
    old_form = new_status(spec, utc_now()).to_dict() | {"caller_env": {"TOKEN": "t0k", "PATH": "/bin"}}
    (spool_dir / "status" / "old.json").write_bytes(orjson.dumps(old_form))
    serve("--allow-commands")
    wait_until(lambda: state_of(spool_dir, "old") == "done", what="the old job done")
    assert (spool_dir / "logs" / "old.log").read_text() == "t0k\n"
    assert status_doc(spool_dir, "old")["caller_env"] == ["PATH", "TOKEN"]  # type: ignore[index]
    assert orjson.loads((spool_dir / "status" / "old.env").read_bytes()) == {"TOKEN": "t0k", "PATH": "/bin"}
