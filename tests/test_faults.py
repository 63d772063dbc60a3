"""Breaking things on purpose: retries, timeouts, dead workers, dead managers, full disks.

Every test ends by checking what the guarantees promise: each accepted job ends in exactly
one final state, runs no more often than it may, its status parses, and no process of it
outlives it."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Callable

import orjson
import pytest

from conftest import (
    POOL, Server, drop, env_for_tests, fill, job, made, needs_small_disk, pid_alive, run_pool, runs_of, start_running,
    state_of, status_doc, wait_until)
from pool.client import Spool
from pool.model import parse_time
from pool.requests import RequestKind

FINAL = {"done", "failed", "cancelled"}


def assert_conserved(spool_dir: Path, ids: list[str], runs_file: Path | None = None, max_runs: int = 1) -> None:
    """Every job final exactly once, every status whole, no job run too often or left running."""
    for name in os.listdir(spool_dir / "status"):
        if name.endswith(".json"):
            orjson.loads((spool_dir / "status" / name).read_bytes())  # parses, or the test fails
    docs = {i: status_doc(spool_dir, i) for i in ids}
    assert all(d is not None and d["state"] in FINAL for d in docs.values()), {
        i: d and d["state"] for i, d in docs.items()}
    assert all(d["pid"] is None for d in docs.values() if d)  # type: ignore[index]
    if runs_file is not None:
        runs = runs_of(runs_file)
        assert all(runs[i] <= max_runs for i in ids), runs
    finals = collections.Counter(
        e["id"] for e in map(orjson.loads, (spool_dir / "events.jsonl").read_bytes().splitlines())
        if e["to"] in FINAL)
    assert all(finals[i] <= 1 for i in ids), finals


# ---------------------------------------------------------------- retries and timeouts

@pytest.mark.every_engine
def test_retries_wait_as_queued_then_succeed(spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve()
    counter = tmp_path / "runs"
    drop(spool_dir, "r.json", job("fail_times", str(counter), 2, id="r", retries=3, retry_delay=0.3,
                                  retry_backoff=2))
    doc = wait_until(lambda: (d := status_doc(spool_dir, "r")) and d["state"] == "queued" and d["next_try_at"] and d,
                     what="waiting for its retry")
    assert doc["attempt"] == 2 and doc["error"]["message"] == "failure number 1"
    wait_until(lambda: state_of(spool_dir, "r") == "done", what="done")
    doc = status_doc(spool_dir, "r")
    assert doc is not None and (doc["attempt"], doc["result"], doc["error"]) == (3, 3, None)

    def states() -> list[str]:
        return [e["to"] for e in map(orjson.loads, (spool_dir / "events.jsonl").read_bytes().splitlines())]

    wait_until(lambda: states()[-1:] == ["done"], what="the last event")
    assert states() == ["queued", "running", "queued", "running", "queued", "running", "done"]


@pytest.mark.every_engine
def test_exhausted_attempts_fail_with_the_last_error_and_pool_retry_runs_it_again_even_once_done(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve()
    counter = tmp_path / "runs"
    drop(spool_dir, "x.json", job("fail_times", str(counter), 2, id="x", retries=1, retry_delay=0))
    wait_until(lambda: state_of(spool_dir, "x") == "failed", what="failed")
    doc = status_doc(spool_dir, "x")
    assert doc is not None and (doc["attempt"], doc["error"]["message"]) == (2, "failure number 2")
    assert run_pool(spool_dir, "retry", "x", check=True).stdout.strip() in ("x: queued", "x: running", "x: done")
    wait_until(lambda: state_of(spool_dir, "x") == "done", what="done after pool retry")
    assert status_doc(spool_dir, "x")["result"] == 3  # type: ignore[index]
    # A job that is done runs again too (pool restart is the same command, as in pueue).
    assert run_pool(spool_dir, "restart", "x", check=True).stdout.strip() in ("x: queued", "x: running", "x: done")
    wait_until(lambda: (d := status_doc(spool_dir, "x")) and d["state"] == "done" and d["result"] == 4,
               what="run again once done")
    assert status_doc(spool_dir, "x")["attempt"] == 1  # type: ignore[index]


@pytest.mark.every_engine
def test_a_timeout_fails_the_attempt_and_is_retried(spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve()
    drop(spool_dir, "t.json", job("forever", id="t", timeout=0.3, retries=1, retry_delay=0))
    wait_until(lambda: state_of(spool_dir, "t") == "failed", what="failed")
    doc = status_doc(spool_dir, "t")
    assert doc is not None and doc["attempt"] == 2 and doc["error"]["type"] == "Timeout"
    assert doc["error"]["message"] == "attempt 2 timed out after 0.3s"
    def ends() -> list[str]:
        events = map(orjson.loads, (spool_dir / "events.jsonl").read_bytes().splitlines())
        return [e["reason"] for e in events if e["from"] == "running"]

    # The event follows the status write: wait for it rather than race it.
    assert wait_until(lambda: len(ends()) == 2 and ends(), what="two attempt events") == [
        "attempt 1 timed out after 0.3s", "attempt 2 timed out after 0.3s"]


@pytest.mark.every_engine
def test_a_job_ignoring_sigterm_is_killed_after_the_grace(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    server = serve("--kill-grace", "0.5")
    ready = tmp_path / "ready"
    drop(spool_dir, "i.json", job("ignore_sigterm", str(ready), id="i"))
    wait_until(ready.exists, what="SIGTERM ignored")
    pid = wait_until(lambda: (d := status_doc(spool_dir, "i")) and d["pid"], what="running written")
    result = run_pool(spool_dir, "kill", "i", check=True)
    assert result.stdout.strip() == "i: cancelled"
    assert not pid_alive(pid)
    assert "job i: still running after SIGTERM; sending SIGKILL" in server.output()


# ---------------------------------------------------------------- dead workers

def zombies_of(pid: int) -> list[int]:
    """Children of ``pid`` that died and were never reaped."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    found = []
    for child in children:
        try:
            if Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                found.append(int(child))
        except OSError:
            continue
    return found


@pytest.mark.every_engine
@pytest.mark.parametrize("how, message", [
    ("sigkill", "was killed by SIGKILL"),
    ("exit", "exited with code 3"),
])
def test_a_dead_worker_is_a_failed_attempt_and_the_manager_keeps_serving(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path, how: str, message: str) -> None:
    server = serve()
    if how == "sigkill":
        pid = start_running(spool_dir, "d", "forever")
        os.kill(pid, signal.SIGKILL)
    else:
        drop(spool_dir, "d.json", job("exit_hard", 3, id="d"))
    wait_until(lambda: state_of(spool_dir, "d") == "failed", what="failed")
    error = status_doc(spool_dir, "d")["error"]  # type: ignore[index]
    assert error["type"] == "WorkerDied" and message in error["message"]
    drop(spool_dir, "after.json", job("add", 1, 1, id="after"))
    wait_until(lambda: state_of(spool_dir, "after") == "done", what="next job done")
    assert server.proc is not None and zombies_of(server.proc.pid) == []  # the dead worker was reaped


@pytest.mark.every_engine
def test_a_killed_worker_with_retries_runs_again(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve()
    runs, gate = tmp_path / "runs", tmp_path / "gate"
    drop(spool_dir, "w.json", job("counted_hold", str(runs), str(gate), id="w", retries=1, retry_delay=0))
    first = wait_until(lambda: (d := status_doc(spool_dir, "w")) and d["state"] == "running" and d["pid"],
                       what="first attempt running")
    # Running is said when the attempt begins, a moment before its code counts the run (the
    # relay engine's manager writes it as soon as its child says so): killed once counted.
    wait_until(lambda: runs.exists() and runs_of(runs)["w"] == 1, what="the first run counted")
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: (d := status_doc(spool_dir, "w")) and d["state"] == "running" and d["attempt"] == 2,
               what="second attempt running")
    gate.touch()
    wait_until(lambda: state_of(spool_dir, "w") == "done", what="done")
    assert runs_of(runs)["w"] == 2
    assert_conserved(spool_dir, ["w"], runs, max_runs=2)


@pytest.mark.every_engine
def test_kill_racing_a_natural_exit_ends_in_one_of_the_two(spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve()
    spool = Spool(spool_dir)
    ids = []
    for n in range(20):
        j = spool.submit("pooltest_tasks:add", n, n, id=f"race-{n}")
        ids.append(j.id)
        wait_until(lambda: state_of(spool_dir, j.id) is not None, what="accepted")
        spool.cancel(j.id, grace=1)
    spool.wait(ids, timeout=60)
    states = {state_of(spool_dir, i) for i in ids}
    assert states <= {"done", "cancelled"}, states
    assert_conserved(spool_dir, ids)


# ---------------------------------------------------------------- dead managers

def test_a_running_job_is_adopted_by_the_next_manager(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    first = serve()
    runs, gate = tmp_path / "runs", tmp_path / "gate"
    pid = start_running(spool_dir, "a", "counted_hold", str(runs), str(gate))
    first.stop(signal.SIGKILL)
    assert pid_alive(pid)  # the orphan keeps working
    second = serve()
    assert "job a: adopted (still running as pid" in second.output()
    assert state_of(spool_dir, "a") == "running"
    gate.touch()
    wait_until(lambda: state_of(spool_dir, "a") == "done", what="done")
    assert runs_of(runs)["a"] == 1  # adopted, not run again
    wait_until(lambda: "adopted job ended" in (spool_dir / "events.jsonl").read_text(), what="the event")
    assert_conserved(spool_dir, ["a"], runs)


def test_an_adopted_job_can_be_killed(spool_dir: Path, serve: Callable[..., Server]) -> None:
    first = serve()
    pid = start_running(spool_dir, "k", "forever")
    first.stop(signal.SIGKILL)
    serve()
    assert run_pool(spool_dir, "kill", "k", check=True).stdout.strip() == "k: cancelled"
    wait_until(lambda: not pid_alive(pid), what="the adopted process gone")


def test_a_job_whose_process_died_with_the_manager_runs_again(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    first = serve()
    runs, gate = tmp_path / "runs", tmp_path / "gate"
    pid = start_running(spool_dir, "l", "counted_hold", str(runs), str(gate))
    first.stop(signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), what="worker gone")
    gate.touch()
    serve()
    wait_until(lambda: state_of(spool_dir, "l") == "done", what="done")
    doc = status_doc(spool_dir, "l")
    assert doc is not None and doc["attempt"] == 2 and runs_of(runs)["l"] == 2
    assert_conserved(spool_dir, ["l"], runs, max_runs=2)


def test_kill_9_of_the_manager_at_random_moments_loses_nothing(
        spool_dir: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    ids = [f"b{n}" for n in range(30)]
    lines = [orjson.dumps(job("counted", str(runs), 0.05, id=i)) for i in ids]
    drop(spool_dir, "batch.jsonl", b"\n".join(lines))
    for done_before_kill in (3, 9, 15, 21):
        server = Server(spool_dir, "--workers", "2").start()
        wait_until(lambda: sum(1 for i in ids if state_of(spool_dir, i) in FINAL) >= done_before_kill,
                   what=f"{done_before_kill} jobs done")
        server.stop(signal.SIGKILL)
    server = Server(spool_dir, "--workers", "2").start()
    try:
        wait_until(lambda: all(state_of(spool_dir, i) in FINAL for i in ids), 60, "all jobs final")
    finally:
        server.stop()
    assert {state_of(spool_dir, i) for i in ids} == {"done"}
    assert_conserved(spool_dir, ids, runs, max_runs=1)


# Points at which a SIGKILL once found pool wanting when it was attacked from the outside
# (each holds now), by syscall family: pool opens, renames and unlinks relative to a folder's
# descriptor (renameat, unlinkat), so each family counts them all.
FAMILIES = {"rename": "rename,renameat,renameat2", "unlink": "unlink,unlinkat"}
MANAGER_POINTS = [("rename", 15), ("rename", 30), ("rename", 60), ("unlink", 5), ("unlink", 15), ("unlink", 25),
                  ("openat", 10), ("openat", 100), ("openat", 200), ("openat", 300), ("write", 30), ("write", 60),
                  ("write", 100), ("write", 140), ("flock", 1), ("getdents64", 10), ("getdents64", 40),
                  ("close", 150), ("read", 300)]
EVERY_PROCESS_POINTS = [("openat", 50), ("openat", 120), ("write", 20), ("write", 60), ("flock", 3), ("rename", 5),
                        ("read", 200), ("unlink", 3)]


def killed_then_finished(spool_dir: Path, tmp_path: Path, ids: list[str] | Callable[[], bool], syscall: str,
                         when: int, every: bool = False) -> None:
    """Serve under strace, which SIGKILLs the manager (``every``: each process) at the
    Nth call of ``syscall``; then a second manager finishes: every job of ``ids`` final
    (or until ``ids()`` says so)."""
    finished = ids if callable(ids) else lambda: all(state_of(spool_dir, i) in FINAL for i in ids)
    log = open(tmp_path / "strace-serve.log", "wb")
    traced = subprocess.Popen(
        ["strace", "-qq", *(["-f"] if every else []), "-o", "/dev/null",
         "-e", f"inject={FAMILIES.get(syscall, syscall)}:signal=SIGKILL:when={when}",
         *POOL, "--spool", str(spool_dir), "serve", "--tasks", "pooltest_tasks", "--workers", "2"],
        env=env_for_tests(), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: traced.poll() is not None or finished(), 60, "the manager to die or finish")
    finally:
        if traced.poll() is None:  # it finished before its Nth call: stop the manager under strace
            for child in subprocess.run(["pgrep", "-P", str(traced.pid)], capture_output=True,
                                        text=True).stdout.split():
                with contextlib.suppress(ProcessLookupError):  # killed at its Nth call meanwhile
                    os.kill(int(child), signal.SIGTERM)
        traced.wait(timeout=60)
        log.close()
    server = Server(spool_dir, "--workers", "2").start()
    try:
        wait_until(finished, 60, "all jobs final")
    finally:
        assert server.stop() == 0


@pytest.mark.needs_strace("to inject SIGKILL at exact system calls")
@pytest.mark.parametrize("syscall, when, every", [(s, w, False) for s, w in MANAGER_POINTS]
                         + [(s, w, True) for s, w in EVERY_PROCESS_POINTS])
def test_kill_9_at_an_exact_system_call_loses_nothing(
        spool_dir: Path, tmp_path: Path, syscall: str, when: int, every: bool) -> None:
    """The manager (``every``: each process, at its own Nth call) dies by SIGKILL from
    strace at the Nth call of ``syscall`` while it takes in and runs a batch of short
    and 0.3 s jobs; a second manager then finishes: every job done exactly once."""
    runs = tmp_path / "runs"
    ids = [f"s{n}" for n in range(46)]
    lines = [orjson.dumps(job("counted", str(runs), id=i)) for i in ids]
    lines += [orjson.dumps(job("counted", str(runs), 0.3, id=f"slow{n}")) for n in range(4)]
    ids += [f"slow{n}" for n in range(4)]
    drop(spool_dir, "batch.jsonl", b"\n".join(lines))
    drop(spool_dir, "single.json", job("counted", str(runs), id="single"))
    ids.append("single")
    killed_then_finished(spool_dir, tmp_path, ids, syscall, when, every)
    assert {state_of(spool_dir, i) for i in ids} == {"done"}
    assert_conserved(spool_dir, ids, runs, max_runs=1)
    assert not [n for n in os.listdir(spool_dir / "incoming") if n.startswith(".claimed~")]


def ended_jobs(spool_dir: Path, expected: int) -> list[str] | None:
    """The ids of the spool's jobs once there are ``expected`` with a status file, each
    final, and no record of queued jobs is left (pool/queuedbook.py); None until then."""
    try:
        names = os.listdir(spool_dir / "status")
    except FileNotFoundError:  # no manager made it yet
        return None
    ids = [name[:-5] for name in names if name.endswith(".json") and not name.startswith(".")]
    if len(ids) != expected or any(name.endswith(".queued") for name in names):
        return None
    return ids if all(state_of(spool_dir, i) in FINAL for i in ids) else None


@pytest.mark.needs_strace("to inject SIGKILL at exact system calls")
@pytest.mark.parametrize("syscall, when, every", [(s, w, False) for s, w in MANAGER_POINTS]
                         + [(s, w, True) for s, w in EVERY_PROCESS_POINTS])
def test_kill_9_at_an_exact_system_call_loses_no_job_of_a_record(
        spool_dir: Path, tmp_path: Path, syscall: str, when: int, every: bool) -> None:
    """As above, the batch's jobs with no ids of their own: their queued statuses are in
    records, not a file each. Every job of the batch is done; each run is counted as an
    attempt (a worker killed with its manager, as ``every`` may, runs its job again,
    counted: lifecycle.recover_lost), and with the workers spared each runs once."""
    runs = tmp_path / "runs"
    lines = [orjson.dumps(job("counted", str(runs))) for _ in range(46)]
    lines += [orjson.dumps(job("counted", str(runs), 0.3)) for _ in range(4)]
    drop(spool_dir, "batch.jsonl", b"\n".join(lines))
    drop(spool_dir, "single.json", job("counted", str(runs), id="single"))
    killed_then_finished(spool_dir, tmp_path, lambda: ended_jobs(spool_dir, 51) is not None, syscall, when, every)
    ids = ended_jobs(spool_dir, 51)
    assert ids is not None and {state_of(spool_dir, i) for i in ids} == {"done"}
    assert_conserved(spool_dir, ids, runs, max_runs=2 if every else 1)
    ran = runs_of(runs)
    assert sorted(ran) == sorted(ids) and all(ran[i] <= status_doc(spool_dir, i)["attempt"] for i in ids), ran  # type: ignore[index]


WAITING_POINTS = [("openat", 40), ("openat", 110), ("write", 50), ("write", 120), ("rename", 8), ("rename", 30),
                  ("flock", 2)]


@pytest.mark.needs_strace("to inject SIGKILL at exact system calls")
@pytest.mark.parametrize("syscall, when", WAITING_POINTS)
def test_kill_9_while_jobs_wait_for_others_and_for_their_time_loses_nothing(
        spool_dir: Path, tmp_path: Path, syscall: str, when: int) -> None:
    """The manager dies by SIGKILL at the Nth call of ``syscall`` while it takes in
    chains of jobs (some whose head fails) and delayed ones, releases and cancels them; a
    second manager finishes: each job final once, none run twice, none before the jobs it
    comes after ended or before its time, none whose dependency failed."""
    runs = tmp_path / "runs"
    jobs, chains = [], 6
    for c in range(chains):
        head = job("counted", str(runs), id=f"c{c}-0") if c % 3 else job("fail", "no", id=f"c{c}-0")
        jobs += [head, *(job("counted", str(runs), id=f"c{c}-{n}", after=[f"c{c}-{n - 1}"]) for n in range(1, 4))]
    jobs += [job("counted", str(runs), id=f"later{n}", delay=0.2 * n) for n in range(6)]
    ids = [str(j["id"]) for j in jobs]
    drop(spool_dir, "graph.jsonl", b"\n".join(orjson.dumps(j) for j in jobs))
    killed_then_finished(spool_dir, tmp_path, ids, syscall, when)
    assert_conserved(spool_dir, ids, runs, max_runs=1)
    docs = {i: status_doc(spool_dir, i) for i in ids}
    for c in range(chains):
        links = [docs[f"c{c}-{n}"] for n in range(4)]
        if c % 3 == 0:  # its head failed: nothing after it ever started
            assert [d["state"] for d in links] == ["failed", "cancelled", "cancelled", "cancelled"]  # type: ignore[index]
            assert all(d["started_at"] is None for d in links[1:])  # type: ignore[index]
        else:
            assert {d["state"] for d in links} == {"done"}  # type: ignore[index]
            assert all(b["started_at"] >= a["finished_at"] for a, b in zip(links, links[1:]))  # type: ignore[index]
    for n in range(6):
        doc = docs[f"later{n}"]
        assert doc is not None and doc["state"] == "done"
        assert (parse_time(doc["started_at"]) - parse_time(doc["created_at"])).total_seconds() >= 0.2 * n


# The manager's first firing of an every-second schedule comes after its ~400 openat of
# starting; its status is its 1st rename, its record the 2nd, its event a write after them.
SCHEDULE_POINTS = [("rename", 1), ("rename", 2), ("rename", 3), ("rename", 5), ("openat", 405), ("write", 28)]


@pytest.mark.needs_strace("to inject SIGKILL at exact system calls")
@pytest.mark.parametrize("syscall, when", SCHEDULE_POINTS)
def test_kill_9_while_a_schedule_fires_fires_each_slot_once(
        spool_dir: Path, tmp_path: Path, syscall: str, when: int) -> None:
    """The manager dies by SIGKILL at the Nth call of ``syscall`` while an every-second
    schedule fires; a second manager goes on: no slot's job was created twice or run
    twice, and every one that ended is done."""
    runs = tmp_path / "runs"
    spool = Spool(made(spool_dir))
    spool.schedule("tick", "pooltest_tasks:counted", str(runs), every="1s", overlap="allow", catch_up="all")

    def firings() -> list[str]:
        return [i for i in spool.dir.status_ids() if i.startswith("tick-")]

    killed_then_finished(spool_dir, tmp_path, lambda: sum(state_of(spool_dir, i) == "done" for i in firings()) >= 4,
                         syscall, when)
    ids = [i for i in firings() if state_of(spool_dir, i) in FINAL]
    assert_conserved(spool_dir, ids, runs, max_runs=1)
    assert {state_of(spool_dir, i) for i in ids} == {"done"}
    created = collections.Counter(
        e["id"] for e in map(orjson.loads, (spool_dir / "events.jsonl").read_bytes().splitlines())
        if e["from"] is None)
    # At most once: a kill can cost the line of the turn it struck (events follow the files).
    assert all(created[i] <= 1 for i in firings()), created


# After the batch is taken in (its renames), a manager's turns while the jobs run each take
# the events' lock (flock) and write: these points fall while the group is at its limit.
GROUP_POINTS = [("flock", 3), ("flock", 6), ("flock", 9), ("write", 28)]


@pytest.mark.needs_strace("to inject SIGKILL at exact system calls")
@pytest.mark.parametrize("syscall, when", GROUP_POINTS)
def test_kill_9_while_a_group_is_at_its_limit_never_runs_more_of_it(
        spool_dir: Path, tmp_path: Path, syscall: str, when: int) -> None:
    """The manager dies by SIGKILL at the Nth call of ``syscall`` while a group of limit
    1 and jobs of no group run on 2 workers; a second manager, which takes over the
    attempt still running, finishes: each job done once, and never two of the group at
    once (as its jobs count themselves)."""
    runs, gpu, cpu = tmp_path / "runs", tmp_path / "gpu", tmp_path / "cpu"
    gpu.mkdir()
    cpu.mkdir()
    Spool(made(spool_dir)).set_group("gpu", 1)
    # Long enough that the next manager starts while one still runs: it must count it.
    jobs = [job("counted_at_once", str(runs), str(gpu), 0.8, id=f"g{n}", group="gpu") for n in range(4)]
    jobs += [job("counted_at_once", str(runs), str(cpu), 0.05, id=f"c{n}") for n in range(6)]
    ids = [str(j["id"]) for j in jobs]
    drop(spool_dir, "mix.jsonl", b"\n".join(orjson.dumps(j) for j in jobs))
    killed_then_finished(spool_dir, tmp_path, ids, syscall, when)
    assert_conserved(spool_dir, ids, runs, max_runs=1)
    assert {state_of(spool_dir, i) for i in ids} == {"done"}
    assert set((tmp_path / "gpu.at-once").read_text().split()) == {"1"}


# A manager that takes over a running job finds a pause request for it: it stops the group
# (kill: SIGSTOP, after its probes), writes `paused` and the pause record (its 3rd and 4th
# renames, after manager.json and manager.pid).
PAUSE_POINTS = [("rename", 3), ("rename", 4), ("kill", 1), ("kill", 2), ("kill", 3), ("kill", 4)]


@pytest.mark.needs_strace("to inject SIGKILL at exact system calls")
@pytest.mark.parametrize("syscall, when", PAUSE_POINTS)
def test_kill_9_while_a_job_is_paused_loses_nothing(spool_dir: Path, tmp_path: Path, syscall: str, when: int) -> None:
    """The manager dies by SIGKILL at the Nth call of ``syscall`` while it pauses a job it
    took over; the next one finds it paused (or running, continued if it was stopped):
    resumed, it ends done, run once, and no process of it is left stopped."""
    runs, gate = tmp_path / "runs", tmp_path / "gate"
    first = Server(spool_dir, "--workers", "1").start()
    drop(spool_dir, "p.json", job("counted_hold", str(runs), str(gate), id="p"))
    wait_until(lambda: state_of(spool_dir, "p") == "running", 30, "p running")
    assert run_pool(spool_dir, "stop", "--detach").returncode == 0
    first.stop()
    Spool(spool_dir).dir.box.file(RequestKind.PAUSE, "p")
    killed_then_finished(spool_dir, tmp_path, lambda: state_of(spool_dir, "p") == "paused", syscall, when)
    gate.touch()
    server = Server(spool_dir, "--workers", "1").start()
    try:
        if state_of(spool_dir, "p") == "paused":
            run_pool(spool_dir, "resume", "p", check=True)
        wait_until(lambda: state_of(spool_dir, "p") == "done", 30, "p done")
    finally:
        assert server.stop() == 0
    assert_conserved(spool_dir, ["p"], runs, max_runs=1)


@pytest.mark.needs_strace("to hold a system call back")
def test_a_kill_filed_while_the_workers_are_still_starting_is_carried_out(spool_dir: Path, tmp_path: Path) -> None:
    """Found by .ci/hunt: a job handed to a worker that had not yet made its process group
    (a loaded machine starts workers slowly) was stopped by signalling a group that did not
    exist yet; the stop found nothing to do, and the job ran to done. Here every setpgid is
    held back 5 s by strace, so the workers are still starting when the job and its kill
    arrive: the job must end cancelled without running."""
    runs = tmp_path / "runs"
    log = open(tmp_path / "strace-serve.log", "wb")
    traced = subprocess.Popen(
        ["strace", "-qq", "-f", "-o", "/dev/null", "-e", "inject=setpgid:delay_enter=5000000",
         *POOL, "--spool", str(spool_dir), "serve", "--tasks", "pooltest_tasks", "--workers", "1"],
        env=env_for_tests(), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: (spool_dir / "manager.pid").exists() or traced.poll() is not None, 60, "serving")
        requests = spool_dir / "requests"
        (requests / ".k.tmp").write_bytes(b"{}")
        os.rename(requests / ".k.tmp", requests / "kill-late")
        drop(spool_dir, "late.json", job("counted", str(runs), id="late"))
        wait_until(lambda: state_of(spool_dir, "late") in FINAL, 60, "the job to end")
        assert (state_of(spool_dir, "late"), runs_of(runs)["late"]) == ("cancelled", 0)
    finally:
        for child in subprocess.run(["pgrep", "-P", str(traced.pid)], capture_output=True, text=True).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(child), signal.SIGTERM)  # strace passes no SIGTERM on: to the manager itself
        traced.wait(timeout=60)
        log.close()


def test_a_second_signal_stops_at_once(spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    server = serve("--grace", "60", "--kill-grace", "60")
    ready = tmp_path / "ready"
    drop(spool_dir, "s.json", job("ignore_sigterm", str(ready), id="s"))
    wait_until(ready.exists, what="running, ignoring SIGTERM")
    pid = wait_until(lambda: (d := status_doc(spool_dir, "s")) and d["pid"], what="running written")
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "stopping" in server.output(), what="the manager to start stopping")
    assert server.proc.poll() is None  # still waiting for the job, within --grace
    assert server.stop(signal.SIGTERM, timeout=30) == 0
    assert not pid_alive(pid)
    doc = status_doc(spool_dir, "s")
    assert doc is not None and (doc["state"], doc["attempt"]) == ("queued", 1)


def stopped_writing_nothing(pid: int, disk: Path) -> bool:
    """Stop process ``pid`` (SIGSTOP); True if it holds no file of ``disk`` open for
    writing then, else let it go on (SIGCONT) and say False."""
    os.kill(pid, signal.SIGSTOP)
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            flags = int(Path(f"/proc/{pid}/fdinfo/{fd}").read_text().split("flags:")[1].split()[0], 8)
        except (OSError, IndexError, ValueError):
            continue
        if target.startswith(str(disk)) and flags & (os.O_WRONLY | os.O_RDWR):
            os.kill(pid, signal.SIGCONT)
            return False
    return True


# ---------------------------------------------------------------- a full or read-only disk

@needs_small_disk
@pytest.mark.parametrize("trouble", ["full", "read-only"])
def test_a_full_or_read_only_disk_loses_nothing_and_recovers(small_disk: Path, tmp_path: Path, trouble: str) -> None:
    spool_dir = small_disk / "spool"
    server = Server(spool_dir, "--workers", "1", log_dir=tmp_path).start()
    try:
        drop(spool_dir, "before.json", job("add", 1, 1, id="before"))
        wait_until(lambda: state_of(spool_dir, "before") == "done", what="a job before the trouble")
        pending = spool_dir / "incoming" / ".later.json.tmp"
        pending.write_bytes(orjson.dumps(job("add", 2, 2, id="later")))
        if trouble == "full":
            filler = fill(small_disk)
            os.rename(pending, spool_dir / "incoming" / "later.json")
        else:
            # The whole filesystem turns read-only (as ext4 does after an I/O error). The job
            # file must be renamed in first, and the manager must see it only afterwards. A
            # remount to read-only fails while a file on it is open for writing: the manager
            # is stopped at a moment it has none open (it opens events.jsonl for each append).
            assert server.proc is not None
            pid = server.proc.pid
            wait_until(lambda: stopped_writing_nothing(pid, small_disk), what="the manager stopped, writing nothing")
            os.rename(pending, spool_dir / "incoming" / "later.json")
            try:  # a worker may still be letting go of the last job's lock this instant
                wait_until(lambda: subprocess.run(["mount", "-o", "remount,ro", str(small_disk)],
                                                  capture_output=True).returncode == 0, 10, "the disk read-only")
            finally:
                server.proc.send_signal(signal.SIGCONT)
        wait_until(lambda: "will try again" in server.output() or "cannot write" in server.output(),
                   what="the manager to notice")
        assert server.proc is not None and server.proc.poll() is None
        assert status_doc(spool_dir, "before")["state"] == "done"  # type: ignore[index]
        if trouble == "full":
            filler.unlink()
        else:
            subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
        try:  # its end, whatever it is, and what the manager said on the way, if it does not come
            finished = wait_until(lambda: (s := state_of(spool_dir, "later")) in ("done", "failed", "cancelled") and s,
                                  30, "the job after recovery")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the manager said:\n{server.output()[-3000:]}") from None
        assert finished == "done", (status_doc(spool_dir, "later"), server.output()[-3000:])
        assert status_doc(spool_dir, "later")["result"] == 4  # type: ignore[index]
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], capture_output=True)
        assert server.stop() == 0
    assert_conserved(spool_dir, ["before", "later"])


def test_the_forkserver_dying_ends_no_job_and_workers_are_still_replaced(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    """multiprocessing takes a dead forkserver's children for dead too: the manager looks
    at the workers themselves, lets their jobs finish, and can still start new ones."""
    server = serve("--workers", "2")
    assert server.proc is not None
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    drop(spool_dir, "f.json", job("counted_hold", str(runs), str(gate), id="f"))
    wait_until(lambda: runs_of(runs)["f"] == 1, what="the job running")
    forkservers = subprocess.run(["pgrep", "-P", str(server.proc.pid), "-f", "multiprocessing.forkserver"],
                                 capture_output=True, text=True).stdout.split()
    assert len(forkservers) == 1
    workers = [int(p) for p in subprocess.run(["pgrep", "-P", forkservers[0]], capture_output=True,
                                              text=True).stdout.split()]
    assert len(workers) == 2
    os.kill(int(forkservers[0]), signal.SIGKILL)
    wait_until(lambda: server.output().count("its forkserver is gone") == 2, what="the manager to notice")
    gate.touch()
    wait_until(lambda: state_of(spool_dir, "f") == "done", what="the job to finish")
    for worker in workers:
        os.kill(worker, signal.SIGKILL)  # now they are gone for good: replaced
    drop(spool_dir, "after.json", job("counted", str(runs), id="after"))
    wait_until(lambda: state_of(spool_dir, "after") == "done", what="a job after all that")
    assert runs_of(runs) == collections.Counter({"f": 1, "after": 1})
    assert_conserved(spool_dir, ["f", "after"], runs)
