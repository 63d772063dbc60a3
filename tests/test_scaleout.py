"""Jobs on several machines (issue 25), end to end: a real redis-server on loopback, two
`pool worker` processes standing for two machines (each its own --name and --workdir),
and a hub (`pool serve --engine celery`) on the test's spool, driven as a user drives
one: job files, `pool submit`, `pool kill`, `pool status`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    POOL,
    Server,
    drop,
    env_for_tests,
    events_of,
    job,
    log_text,
    run_pool,
    state_of,
    status_doc,
    wait_until,
)
from scaleout_rig import Broker, Worker, announced

pytestmark = pytest.mark.needs_redis_server("to run jobs through a real broker")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    folder = tmp_path / "redis"
    folder.mkdir()
    started = Broker(folder).start()
    yield started
    started.stop()


@pytest.fixture
def machines(broker: Broker, tmp_path: Path) -> Iterator[Callable[..., list[Worker]]]:
    """Start `pool worker`s (names, and their arguments), and wait until each announced itself."""
    started: list[Worker] = []

    def start(*names: str, args: tuple[str, ...] = ("--tasks", "pooltest_tasks", "--allow-commands",
                                                    "--slots", "2")) -> list[Worker]:
        new = [Worker(broker, name, tmp_path, *args) for name in names]
        started.extend(new)
        wait_until(lambda: announced(broker, *names) or any(w.proc.poll() is not None for w in new), 60,
                   "the workers to announce themselves")
        for worker in new:
            assert worker.proc.poll() is None, worker.output()
        return new

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def hub(spool_dir: Path, broker: Broker) -> Iterator[Server]:
    """The hub: `pool serve --engine celery` on the test's spool."""
    server = Server(spool_dir, "--engine", "celery", "--broker", broker.url, "--allow-commands").start()
    yield server
    server.stop()


def test_a_job_file_dropped_at_the_hub_ends_done_on_a_worker_which_its_status_names(
        spool_dir: Path, hub: Any, machines: Any) -> None:
    machines("left", "right")
    drop(spool_dir, "sum.json", job("add", 2, 3, id="sum"))
    wait_until(lambda: state_of(spool_dir, "sum") == "done", 60, "done")
    doc = status_doc(spool_dir, "sum")
    assert doc is not None
    assert (doc["result"], doc["progress"], doc["attempt"]) == (5, 1.0, 1)
    assert doc["host"] in ("left", "right") and doc["pid"] is None  # a process of another machine
    table = run_pool(spool_dir, "status", check=True).stdout.splitlines()
    assert table[0].split()[-1] == "HOST" and table[1].split()[-1] == doc["host"]
    assert f"host:      {doc['host']}" in run_pool(spool_dir, "status", "sum", check=True).stdout


def test_progress_and_output_reach_the_hub_as_they_come(spool_dir: Path, hub: Any, machines: Any,
                                                      tmp_path: Path) -> None:
    machines("only")
    gates = tmp_path / "gates"
    gates.mkdir()
    job_id = run_pool(spool_dir, "submit", "pooltest_tasks:steps_on_gates", str(gates), "3", check=True).stdout.strip()
    wait_until(lambda: (d := status_doc(spool_dir, job_id)) and d["state"] == "running" and d["progress"],
               30, "the first step's progress at the hub")
    doc = status_doc(spool_dir, job_id)
    assert doc is not None and doc["host"] == "only" and abs(doc["progress"] - 1 / 3) < 1e-6
    assert doc["message"] == "line: step 1 of 3"
    wait_until(lambda: log_text(spool_dir, job_id) == "line 1\n", 30, "its first line at the hub")
    (gates / "1").touch()
    wait_until(lambda: log_text(spool_dir, job_id) == "line 1\nline 2\n", 30, "its second line")
    (gates / "2").touch()
    (gates / "3").touch()
    wait_until(lambda: state_of(spool_dir, job_id) == "done", 30, "done")
    assert log_text(spool_dir, job_id) == "line 1\nline 2\nline 3\n"


def test_twenty_megabytes_printed_on_a_worker_make_a_byte_identical_log_at_the_hub(
        spool_dir: Path, hub: Any, machines: Any) -> None:
    machines("only")
    script = "import sys\nfor n in range(200_000): sys.stdout.write(f'{n:08d} ' + 'x' * 90 + '\\n')\n"
    job_id = run_pool(spool_dir, "submit", "--command", "python3", "-c", script, check=True).stdout.strip()
    wait_until(lambda: state_of(spool_dir, job_id) == "done", 60, "done")
    expected = subprocess.run(["python3", "-c", script], capture_output=True, check=True).stdout
    assert len(expected) == 20_000_000
    assert (spool_dir / "logs" / f"{job_id}.log").read_bytes() == expected


def test_a_log_printed_on_a_worker_is_kept_within_the_hubs_max_log_bytes_with_its_exact_tail(
        spool_dir: Path, broker: Broker, machines: Any) -> None:
    from pool import joblog

    server = Server(spool_dir, "--engine", "celery", "--broker", broker.url, "--allow-commands",
                    "--max-log-bytes", "8192").start()
    try:
        machines("only")
        script = "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); echo \"output line $i\"; done"
        job_id = run_pool(spool_dir, "submit", "--command", "sh", "-c", script, check=True).stdout.strip()
        wait_until(lambda: state_of(spool_dir, job_id) == "done", 60, "done")
    finally:
        server.stop()
    whole = b"".join(b"output line %d\n" % n for n in range(1, 20001))
    log = (spool_dir / "logs" / f"{job_id}.log").read_bytes()
    assert len(log) <= 8192
    dropped, mark_length = joblog.dropped_before(log)
    assert mark_length and whole[dropped:] == log[mark_length:]  # the tail, exactly, from a line start


def test_what_a_job_used_on_its_worker_is_in_its_status_at_the_hub(spool_dir: Path, hub: Any, machines: Any) -> None:
    from pool.usage import Usage

    machines("only")
    job_id = run_pool(spool_dir, "submit", "pooltest_tasks:uses", "60", "0.4", check=True).stdout.strip()
    wait_until(lambda: state_of(spool_dir, job_id) == "done", 60, "done")
    used = Usage.from_dict((status_doc(spool_dir, job_id) or {})["usage"])
    # Its peak holds the interpreter it was forked from (50 MiB of a Celery process), no more.
    assert 0.4 <= used.cpu < 0.6 and used.wall >= 0.4 and 60 * 2**20 <= used.max_rss < 200 * 2**20, used
    assert re.search(r"^used: +cpu 0\.\d\ds", run_pool(spool_dir, "status", job_id, check=True).stdout, re.M)


def test_kill_of_a_running_command_leaves_nothing_of_it_on_its_worker(spool_dir: Path, hub: Any,
                                                                     machines: Any) -> None:
    machines("only")
    job_id = run_pool(spool_dir, "submit", "--command", "sh", "-c", "sleep 2987 & sleep 2987 & wait",
                      check=True).stdout.strip()
    wait_until(lambda: state_of(spool_dir, job_id) == "running" and sleeping(), 30, "both sleeps running")
    killed = run_pool(spool_dir, "kill", job_id)
    assert killed.returncode == 0, killed.stderr
    assert state_of(spool_dir, job_id) == "cancelled"
    wait_until(lambda: not sleeping(), 5, "every process of the job gone")


def sleeping() -> bool:
    """A process of the job's runs on its machine (this one): its command line says so."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes() == b"sleep\x002987\x00":
                return True
        except OSError:
            continue
    return False


def test_jobs_use_both_machines(spool_dir: Path, hub: Any, machines: Any, tmp_path: Path) -> None:
    machines("left", "right", args=("--tasks", "pooltest_tasks", "--slots", "1"))
    gate = tmp_path / "gate"
    ids = [run_pool(spool_dir, "submit", "pooltest_tasks:hold", str(gate), check=True).stdout.strip()
           for _ in range(2)]
    wait_until(lambda: all(state_of(spool_dir, i) == "running" for i in ids), 30, "both running at once")
    hosts = {doc["host"] for doc in (status_doc(spool_dir, i) for i in ids) if doc}
    assert hosts == {"left", "right"}
    gate.touch()
    for job_id in ids:
        wait_until(lambda job_id=job_id: state_of(spool_dir, job_id) == "done", 30, "done")


def test_pool_workers_on_the_hub_lists_the_machines_with_their_slots_and_jobs(
        spool_dir: Path, hub: Any, machines: Any, tmp_path: Path) -> None:
    machines("left", args=("--tasks", "pooltest_tasks", "--slots", "2"))
    machines("right", args=("--allow-commands", "--slots", "3"))

    def listed() -> list[str]:
        return run_pool(spool_dir, "workers", check=True).stdout.splitlines()[1:]

    wait_until(lambda: len(listed()) == 2, 30, "both machines listed")
    # Its cap is their slots (no --workers given), not the cores of the hub's machine.
    assert run_pool(spool_dir, "workers", check=True).stdout.splitlines()[0] == "2 machines, 5 slots"
    assert listed() == ["  left: 0 of 2 slots busy; runs tasks of pooltest_tasks",
                        "  right: 0 of 3 slots busy; runs commands"]
    gate = tmp_path / "gate"
    job_id = run_pool(spool_dir, "submit", "pooltest_tasks:hold", str(gate), check=True).stdout.strip()
    wait_until(lambda: listed()[0] == "  left: 1 of 2 slots busy; runs tasks of pooltest_tasks", 30, "left busy")
    gate.touch()
    wait_until(lambda: state_of(spool_dir, job_id) == "done", 30, "done")


def processes_in(folder: Path) -> list[int]:
    """The processes working in ``folder`` or under it: a machine's jobs (each attempt
    runs in a folder of its own under its worker's --workdir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")).is_relative_to(folder):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_kill_9_of_a_worker_ends_its_job_there_and_the_retry_runs_once_on_the_other(
        spool_dir: Path, hub: Any, machines: Any, tmp_path: Path) -> None:
    workers = {w.name: w for w in machines("left", "right", args=("--allow-commands", "--slots", "1", "--lease", "3"))}
    runs, gate = tmp_path / "runs", tmp_path / "gate"
    script = f"echo run >> {runs}; while [ ! -e {gate} ]; do sleep 0.05; done"
    job_id = run_pool(spool_dir, "submit", "--retries", "1", "--command", "sh", "-c", script,
                      check=True).stdout.strip()
    first = wait_until(lambda: (d := status_doc(spool_dir, job_id)) and d["state"] == "running" and d["host"], 30,
                       "running")
    struck = workers[first]
    # Its shell at work (a shell killed before its first line ran nothing: once, under load).
    wait_until(lambda: runs.exists() and runs.read_text() == "run\n" and processes_in(struck.workdir), 30,
               "the job's shell at work on its machine")
    os.kill(struck.proc.pid, signal.SIGKILL)  # the worker alone: its processes are left to see to it
    wait_until(lambda: not processes_in(struck.workdir), 30, "nothing of the job left on the struck machine")
    wait_until(lambda: (d := status_doc(spool_dir, job_id)) and d["attempt"] == 2 and d["state"] == "running", 30,
               "attempt 2 running")
    doc = status_doc(spool_dir, job_id)
    assert doc is not None and doc["host"] != first
    gate.touch()
    wait_until(lambda: state_of(spool_dir, job_id) == "done", 30, "done")
    assert runs.read_text() == "run\nrun\n"  # two executions, one after the other
    ended = [e for e in events_of(spool_dir, job_id) if e["attempt"] == 1 and e["from"] == "running"]
    # Its worker's processes died with it: the hub heard nothing more, and its lease ran out.
    assert [e["to"] for e in ended] == ["queued"] and f"its worker {first} was lost" in ended[0]["reason"]


def test_a_term_ignoring_job_dies_after_its_grace(spool_dir: Path, hub: Any, machines: Any, tmp_path: Path) -> None:
    (worker,) = machines("only")
    ready = tmp_path / "ready"
    job_id = run_pool(spool_dir, "submit", "pooltest_tasks:ignore_sigterm", str(ready), check=True).stdout.strip()
    wait_until(ready.exists, 30, "the job ignoring SIGTERM")
    assert processes_in(worker.workdir)
    killed = run_pool(spool_dir, "kill", "--grace", "0.5", job_id)
    assert killed.returncode == 0, killed.stderr
    assert state_of(spool_dir, job_id) == "cancelled"
    wait_until(lambda: not processes_in(worker.workdir), 30, "nothing of it left")


def test_a_job_killed_once_sent_but_before_a_worker_began_it_never_runs(
        spool_dir: Path, hub: Any, broker: Broker, machines: Any, tmp_path: Path) -> None:
    import redis

    (worker,) = machines("only")
    os.killpg(worker.proc.pid, signal.SIGSTOP)  # it takes nothing now: a message sent waits for it
    try:
        runs = tmp_path / "runs"
        job_id = run_pool(spool_dir, "submit", "pooltest_tasks:counted", str(runs), check=True).stdout.strip()
        db = redis.Redis.from_url(broker.url)
        wait_until(lambda: db.llen("pool.task.pooltest_tasks"), 30, "its attempt sent")
        killed = run_pool(spool_dir, "kill", job_id)
        assert killed.returncode == 0 and state_of(spool_dir, job_id) == "cancelled", killed.stderr
    finally:
        os.killpg(worker.proc.pid, signal.SIGCONT)
    # The worker takes the message, finds the attempt cancelled, and runs nothing.
    wait_until(lambda: not db.llen("pool.task.pooltest_tasks") and not db.hlen("unacked"), 30, "the message taken")
    assert not runs.exists()
    assert [e["to"] for e in events_of(spool_dir, job_id)] == ["queued", "cancelled"]


def test_with_every_slot_busy_a_later_urgent_job_starts_before_an_earlier_one(
        spool_dir: Path, hub: Any, machines: Any, tmp_path: Path) -> None:
    machines("only", args=("--tasks", "pooltest_tasks", "--slots", "1"))
    gate, order = tmp_path / "gate", tmp_path / "order"
    blocker = run_pool(spool_dir, "submit", "pooltest_tasks:hold", str(gate), check=True).stdout.strip()
    wait_until(lambda: state_of(spool_dir, blocker) == "running", 30, "the only slot busy")
    early = run_pool(spool_dir, "submit", "pooltest_tasks:record_order", str(order), check=True).stdout.strip()
    urgent = run_pool(spool_dir, "submit", "--priority", "5", "pooltest_tasks:record_order", str(order),
                      check=True).stdout.strip()
    gate.touch()
    wait_until(lambda: state_of(spool_dir, early) == "done", 30, "both done")
    assert order.read_text().split() == [urgent, early]


def test_fewer_workers_asked_of_a_hub_takes_back_what_was_sent_ahead(
        spool_dir: Path, hub: Any, broker: Broker, machines: Any, tmp_path: Path) -> None:
    import redis

    machines("only", args=("--tasks", "pooltest_tasks", "--slots", "2"))
    gates = [tmp_path / f"gate{n}" for n in range(4)]
    ids = [run_pool(spool_dir, "submit", "pooltest_tasks:hold", str(gate), check=True).stdout.strip() for gate in gates]
    wait_until(lambda: [state_of(spool_dir, i) for i in ids] == ["running", "running", "queued", "queued"], 30,
               "the first two running")
    db = redis.Redis.from_url(broker.url)

    def attempts(job_id: str) -> list[tuple[bytes, bytes | None]]:
        """(state, the worker that claimed it) of each of the job's attempts the broker knows."""
        return [tuple(db.hmget(key, ["state", "worker"])) for key in db.scan_iter("pool:attempt:*")
                if db.hget(key, "job") == job_id.encode()]

    wait_until(lambda: db.llen("pool.task.pooltest_tasks") == 2, 30, "two sent ahead")
    assert run_pool(spool_dir, "workers", "1", check=True).stdout.startswith("1 workers from now on")
    # Neither will begin when a slot frees: one job at a time from now on.
    wait_until(lambda: all(attempts(i) == [(b"ended", None)] for i in ids[2:]), 30, "both taken back unclaimed")
    assert run_pool(spool_dir, "workers", check=True).stdout.splitlines()[0] == \
        "1 machines, 2 slots; at most 1 jobs at once (pool workers N)"
    for gate in gates:
        gate.touch()
    for job_id in ids:
        wait_until(lambda job_id=job_id: state_of(spool_dir, job_id) == "done", 30, "done")
    assert all(events_of(spool_dir, i)[-1]["attempt"] == 1 for i in ids)  # taken back: not counted


def test_a_take_back_never_stops_an_attempt_a_worker_has_claimed(broker: Broker) -> None:
    import redis

    from pool.scaleout import protocol as p

    db = redis.Redis.from_url(broker.url)
    db.hset(p.attempt_key("a" * 32), mapping={"state": "running", "worker": "left"})
    told = (p.attempt_key("a" * 32), p.cancel_key("a" * 32))
    assert db.eval(p.CANCEL, 2, *told, "take-back", "0", "unstarted only") == b"running"
    assert db.hget(p.attempt_key("a" * 32), "cancel") is None  # its worker is not told to stop it
    assert not db.exists(p.cancel_key("a" * 32))
    assert db.eval(p.CANCEL, 2, *told, "cancel", "5", "") == b"running"
    assert db.hmget(p.attempt_key("a" * 32), ["cancel", "grace"]) == [b"cancel", b"5"]
    assert db.lrange(p.cancel_key("a" * 32), 0, -1) == [b"cancel"]  # the word its worker waits on
    db.hset(p.attempt_key("b" * 32), mapping={"state": "sent"})
    assert db.eval(p.CANCEL, 1, p.attempt_key("b" * 32), "take-back", "0", "unstarted only") == b"unstarted"
    assert db.hget(p.attempt_key("b" * 32), "state") == b"cancelled"  # a claim of it fails


def test_a_job_no_worker_offers_to_run_waits_saying_what_it_needs_and_runs_once_one_does(
        spool_dir: Path, hub: Any, machines: Any) -> None:
    machines("commands-only", args=("--allow-commands", "--slots", "1"))
    job_id = run_pool(spool_dir, "submit", "pooltest_tasks:add", "1", "2", check=True).stdout.strip()
    wanted = "waits for a pool worker that serves task module 'pooltest_tasks'"
    wait_until(lambda: wanted in ((status_doc(spool_dir, job_id) or {}).get("message") or ""), 30, "why it waits")
    assert state_of(spool_dir, job_id) == "queued"
    assert wanted in run_pool(spool_dir, "status", job_id, check=True).stdout
    command = run_pool(spool_dir, "submit", "--command", "true", check=True).stdout.strip()
    wait_until(lambda: state_of(spool_dir, command) == "done", 30, "the command run meanwhile")  # not held behind it
    machines("tasks", args=("--tasks", "pooltest_tasks", "--slots", "1"))
    wait_until(lambda: state_of(spool_dir, job_id) == "done", 30, "done once a worker serves it")
    doc = status_doc(spool_dir, job_id)
    assert doc is not None and (doc["host"], doc["attempt"], doc["result"]) == ("tasks", 1, 3)


def sent_by_hand(broker: Broker, job_id: str, runs: Path, token: str, *serializers: str) -> tuple[Any, str]:
    """An attempt of a job that records its run (``runs``) made ready to claim, and its
    message sent once in each of ``serializers``, as a hub (or an attacker) would."""
    import redis
    from celery import Celery

    from pool.jobfile import parse_job
    from pool.model import new_status, utc_now
    from pool.scaleout import protocol

    status = new_status(parse_job(job("counted", str(runs), id=job_id), "test", "test"), utc_now())
    db = redis.Redis.from_url(broker.url)
    db.hset(protocol.attempt_key(token), mapping={"state": "sent", "job": job_id, "attempt": 1})
    sender = Celery("sender", broker=broker.url)
    sender.conf.update(accept_content=["pickle", "json"])
    for serializer in serializers:
        sender.send_task(protocol.TASK_NAME, args=[protocol.attempt_message(token, status)],
                         queue="pool.task.pooltest_tasks", serializer=serializer)
    return db, token


def test_a_pickled_message_is_refused_and_nothing_runs(spool_dir: Path, broker: Broker, machines: Any,
                                                       tmp_path: Path) -> None:
    (worker,) = machines("only")
    runs = tmp_path / "runs"
    db, token = sent_by_hand(broker, "pickled", runs, "0" * 32, "pickle")
    wait_until(lambda: not db.llen("pool.task.pooltest_tasks") and not db.hlen("unacked"), 30, "the message taken")
    wait_until(lambda: "pickle" in worker.output(), 30, "the refusal said")
    assert not runs.exists() and db.hget(f"pool:attempt:{token}", "state") == b"sent"  # never claimed


def test_a_hub_killed_mid_job_and_a_new_one_finish_the_job_once_with_its_whole_log(
        spool_dir: Path, broker: Broker, machines: Any, tmp_path: Path) -> None:
    machines("only")
    args = ("--engine", "celery", "--broker", broker.url, "--allow-commands")
    first = Server(spool_dir, *args).start()
    gates = tmp_path / "gates"
    gates.mkdir()
    job_id = run_pool(spool_dir, "submit", "pooltest_tasks:steps_on_gates", str(gates), "3", check=True).stdout.strip()
    wait_until(lambda: log_text(spool_dir, job_id) == "line 1\n", 30, "its first line at the hub")
    first.stop(signal.SIGKILL)
    (gates / "1").touch()  # it prints on while no hub hears it
    second = Server(spool_dir, *args).start()
    try:
        wait_until(lambda: log_text(spool_dir, job_id) == "line 1\nline 2\n", 30, "the line printed meanwhile")
        (gates / "2").touch()
        (gates / "3").touch()
        wait_until(lambda: state_of(spool_dir, job_id) == "done", 30, "done")
    finally:
        second.stop()
    assert log_text(spool_dir, job_id) == "line 1\nline 2\nline 3\n"
    assert [(e["from"], e["to"]) for e in events_of(spool_dir, job_id)] == [
        (None, "queued"), ("queued", "running"), ("running", "done")]  # one attempt, never re-run


def test_a_new_hub_writes_on_a_log_that_was_cut_where_it_was_not_again(
        spool_dir: Path, broker: Broker, machines: Any, tmp_path: Path) -> None:
    from pool import joblog

    machines("only")
    args = ("--engine", "celery", "--broker", broker.url, "--allow-commands", "--max-log-bytes", "8192")
    first = Server(spool_dir, *args).start()
    gate1, gate2 = tmp_path / "gate1", tmp_path / "gate2"
    lines = 'while [ $i -lt {0} ]; do i=$((i+1)); echo "output line $i"; done'
    script = (f"i=0; {lines.format(3000)}; until [ -e {gate1} ]; do sleep 0.01; done; {lines.format(6000)}; "
              f"until [ -e {gate2} ]; do sleep 0.01; done")
    job_id = run_pool(spool_dir, "submit", "--command", "sh", "-c", script, check=True).stdout.strip()
    wait_until(lambda: log_text(spool_dir, job_id).endswith("output line 3000\n"), 30, "the first half at the hub")
    first.stop(signal.SIGKILL)
    gate1.touch()  # the second half is printed while no hub hears it
    second = Server(spool_dir, *args).start()
    try:
        wait_until(lambda: log_text(spool_dir, job_id).endswith("output line 6000\n"), 30, "the second half")
        gate2.touch()
        wait_until(lambda: state_of(spool_dir, job_id) == "done", 30, "done")
    finally:
        second.stop()
    whole = b"".join(b"output line %d\n" % n for n in range(1, 6001))
    log = (spool_dir / "logs" / f"{job_id}.log").read_bytes()
    dropped, mark_length = joblog.dropped_before(log)
    assert len(log) <= 8192 and mark_length and whole[dropped:] == log[mark_length:]  # nothing written twice


def test_an_attempt_message_delivered_twice_runs_once(spool_dir: Path, broker: Broker, machines: Any,
                                                      tmp_path: Path) -> None:
    machines("left", "right")
    runs = tmp_path / "runs"
    db, token = sent_by_hand(broker, "twice", runs, "1" * 32, "json", "json")  # as a broker may redeliver it
    wait_until(lambda: any(f[b"kind"] == b"exit" for _, f in db.xrange(f"pool:events:{token}")), 30,
               "the attempt ended")
    wait_until(lambda: not db.llen("pool.task.pooltest_tasks") and not db.hlen("unacked"), 30, "both messages taken")
    assert runs.read_text() == "twice\n"


def test_a_broker_restarted_with_no_persistence_loses_no_job_and_runs_none_twice(
        spool_dir: Path, hub: Any, broker: Broker, machines: Any, tmp_path: Path) -> None:
    import redis

    machines("only", args=("--allow-commands", "--slots", "2"))
    runs, gate = tmp_path / "runs", tmp_path / "gate"
    script = f'echo "$POOL_JOB_ID" >> {runs}; echo before; while [ ! -e {gate} ]; do sleep 0.05; done; echo after'
    ids = [run_pool(spool_dir, "submit", "--command", "sh", "-c", script, check=True).stdout.strip()
           for _ in range(4)]
    db = redis.Redis.from_url(broker.url)
    running = wait_until(lambda: (r := [i for i in ids if "before" in log_text(spool_dir, i)]) and len(r) == 2 and r,
                         30, "two running, their first line at the hub")
    wait_until(lambda: db.llen("pool.commands") == 2, 30, "the other two sent ahead, waiting in the broker")
    broker.stop()  # everything it held is gone: no persistence
    assert not broker.answers()
    broker.start()
    db = redis.Redis.from_url(broker.url)
    # The worker puts back the leases of what it runs: the hub, which found them gone, sees
    # them again, and no attempt is called lost (only a job that ends sooner needs none).
    wait_until(lambda: len(list(db.scan_iter("pool:lease:*"))) == 2, 30, "both leases put back by their worker")
    gate.touch()
    for job_id in ids:
        wait_until(lambda job_id=job_id: state_of(spool_dir, job_id) == "done", 60, f"{job_id} done")
    assert sorted(runs.read_text().split()) == sorted(ids)  # each ran, once
    assert all(events_of(spool_dir, i)[-1]["attempt"] == 1 for i in ids)
    # Output said before the restart, and after it on streams the broker began afresh: all of it, once.
    assert all(log_text(spool_dir, i) == "before\nafter\n" for i in ids), [log_text(spool_dir, i) for i in running]
    late = run_pool(spool_dir, "submit", "--command", "echo", "late", check=True).stdout.strip()
    wait_until(lambda: state_of(spool_dir, late) == "done", 30, "a job submitted after the restart done")


def test_a_commands_tqdm_bar_moves_at_the_hub_and_logs_f_follows_it_to_its_end(
        spool_dir: Path, hub: Any, machines: Any, tmp_path: Path) -> None:
    machines("only")
    gate = tmp_path / "gate"
    code = ("from tqdm import tqdm\nfrom waiting import wait_for_gate\n"
            f"for i in tqdm(range(100), mininterval=0, ncols=60):\n"
            f"    if i == 45: wait_for_gate({str(gate)!r})\n"
            "print('all done')\n")
    job_id = run_pool(spool_dir, "submit", "--command", sys.executable, "-c", code, check=True).stdout.strip()
    wait_until(lambda: (d := status_doc(spool_dir, job_id)) and d["state"] == "running" and d["progress"] == 0.45,
               30, "the bar at 45% at the hub")
    follower = subprocess.Popen([*POOL, "--spool", str(spool_dir), "logs", "-f", job_id], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env_for_tests())
    try:
        gate.touch()
        out, err = follower.communicate(timeout=60)  # it ends once the job has
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, err
    assert state_of(spool_dir, job_id) == "done"
    assert out == (spool_dir / "logs" / f"{job_id}.log").read_bytes() and out.endswith(b"all done\n")
    assert b"\r" in out and b"100/100" in out


def test_jobs_fill_every_slot_of_both_machines(spool_dir: Path, hub: Any, machines: Any, tmp_path: Path) -> None:
    machines("left", "right", args=("--tasks", "pooltest_tasks", "--slots", "2"))
    gate, markers = tmp_path / "gate", tmp_path / "markers"
    markers.mkdir()
    ids = [run_pool(spool_dir, "submit", "pooltest_tasks:hold", str(gate), str(markers), check=True).stdout.strip()
           for _ in range(8)]
    wait_until(lambda: len(os.listdir(markers)) == 4, 30, "four running at once, two a machine")
    hosts = [d["host"] for d in (status_doc(spool_dir, i) for i in ids) if d and d["state"] == "running"]
    assert sorted(hosts) == ["left", "left", "right", "right"]
    gate.touch()
    for job_id in ids:
        wait_until(lambda job_id=job_id: state_of(spool_dir, job_id) == "done", 30, "done")
    assert max(int(n) for n in (tmp_path / "concurrency.log").read_text().split()) == 4


def test_with_no_retry_left_a_job_whose_worker_was_lost_fails_and_pool_retry_runs_it_again(
        spool_dir: Path, hub: Any, machines: Any, tmp_path: Path) -> None:
    (struck,) = machines("struck", args=("--tasks", "pooltest_tasks", "--slots", "1", "--lease", "3"))
    runs, gate = tmp_path / "runs", tmp_path / "gate"
    job_id = run_pool(spool_dir, "submit", "pooltest_tasks:counted_hold", str(runs), str(gate),
                      check=True).stdout.strip()
    wait_until(runs.exists, 30, "it began")
    os.kill(struck.proc.pid, signal.SIGKILL)
    wait_until(lambda: state_of(spool_dir, job_id) == "failed", 30, "failed")
    doc = status_doc(spool_dir, job_id)
    assert doc is not None and doc["error"]["type"] == "WorkerDied" and "struck was lost" in doc["error"]["message"]
    machines("spare", args=("--tasks", "pooltest_tasks", "--slots", "1"))
    gate.touch()
    run_pool(spool_dir, "retry", job_id, check=True)
    wait_until(lambda: state_of(spool_dir, job_id) == "done", 30, "done on the spare")
    assert runs.read_text().split() == [job_id, job_id]
    assert (status_doc(spool_dir, job_id) or {}).get("host") == "spare"


def test_a_worker_lost_before_the_hub_heard_its_attempt_begin_is_named(
        broker: Broker, tmp_path: Path) -> None:
    # kill -9 of a worker a moment after its claim, before its word that the attempt began
    # was said: the failure still names the worker (it once said "(unknown)").
    import redis

    from pool.attempt import WorkerConfig
    from pool.engines import EngineSettings
    from pool.executor import Ended
    from pool.jobfile import parse_job
    from pool.model import new_status, utc_now
    from pool.scaleout import hub as hub_module
    from pool.scaleout import protocol as p

    executor = hub_module.CeleryExecutor(EngineSettings(WorkerConfig(str(tmp_path)), 1, broker=broker.url))
    status = new_status(parse_job(job("counted", str(tmp_path / "runs"), id="claimed"), "test", "test"), utc_now())
    token = "c" * 32
    sent = hub_module.Sent(token, status, sent_at=0.0)
    executor.sent[status.id], executor.by_token[token] = sent, sent
    redis.Redis.from_url(broker.url).hset(p.attempt_key(token), mapping={"state": "running", "worker": "struck"})
    (ended,) = [e for e in executor.collect([], hub_module.LEASE_LOOK_EVERY + 2.0) if isinstance(e, Ended)]
    assert type(ended.outcome).__name__ == "WorkerDied" and "its worker struck was lost" in str(ended.outcome)
    # A runner that died before it said it began: its worker's word of the exit names it.
    token = "d" * 32
    sent = hub_module.Sent(token, status, sent_at=0.0)
    executor.sent[status.id], executor.by_token[token] = sent, sent
    executor.heard.append((token, {b"kind": b"exit", b"worker": b"left",
                                   b"data": b'{"how": "was killed by SIGKILL", "began": false}'}))
    (ended,) = [e for e in executor.collect([], 0.0) if isinstance(e, Ended)]
    assert type(ended.outcome).__name__ == "NotBegun" and "its runner on left was killed" in str(ended.outcome)


def test_a_broker_gone_longer_than_the_lease_has_its_workers_stop_their_jobs_which_run_again_once(
        spool_dir: Path, hub: Any, broker: Broker, machines: Any, tmp_path: Path) -> None:
    (worker,) = machines("only", args=("--tasks", "pooltest_tasks", "--slots", "1", "--lease", "3"))
    runs, gate = tmp_path / "runs", tmp_path / "gate"
    job_id = run_pool(spool_dir, "submit", "--retries", "1", "pooltest_tasks:counted_hold", str(runs), str(gate),
                      check=True).stdout.strip()
    wait_until(lambda: runs.exists() and processes_in(worker.workdir), 30, "it began")
    broker.stop()
    # Its lease cannot be renewed: before the hub may call it lost, its worker stops it.
    wait_until(lambda: not processes_in(worker.workdir), 30, "the worker stopping its job itself")
    broker.start()
    gate.touch()
    wait_until(lambda: state_of(spool_dir, job_id) == "done", 60, "done")
    assert runs.read_text().split() == [job_id, job_id]  # once each attempt, one after the other
    assert (status_doc(spool_dir, job_id) or {}).get("attempt") == 2


def test_the_dashboard_lists_the_machines_a_hub_runs_jobs_on(spool_dir: Path, hub: Any, machines: Any,
                                                             web: Any) -> None:
    machines("left", args=("--tasks", "pooltest_tasks", "--slots", "2"))
    server = web()
    wait_until(lambda: server.json("/api/workers"), 30, "the machine listed")
    assert server.json("/api/workers") == [{"name": "left", "slots": 2, "busy": 0, "tasks": ["pooltest_tasks"],
                                            "commands": False}]
    status, _, page = server.call("/schedules")
    assert status == 200 and b"<td>left</td><td>2</td><td>0</td>" in page and b"pooltest_tasks" in page
