"""pool.Executor: concurrent.futures in front of a spool, with a private manager or the
one serving it; what cannot be sent is refused at submit; failures, kills and timeouts
look like the standard executor's; a caller killed leaves its jobs running, and a
private manager killed leaves no future hanging."""

from __future__ import annotations

import concurrent.futures
import functools
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import executor_tasks
import pooltest_tasks
import pytest
from conftest import Server, env_for_tests, pid_alive, run_pool, state_of, status_doc, wait_until

import pool
from pool.requests import RequestKind


def test_a_private_executor_runs_jobs_in_a_spool_of_its_own_and_removes_it(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with pool.Executor(max_workers=2) as ex:
        spool_dir, manager = ex.spool.path, ex.manager
        assert manager is not None and pid_alive(manager.process.pid)
        squares = [ex.submit(executor_tasks.square, n) for n in range(6)]
        assert [f.result(timeout=60) for f in squares] == [0, 1, 4, 9, 16, 25]
        assert list(ex.map(executor_tasks.square, [7, 8], timeout=60)) == [49, 64]
        held = ex.submit(executor_tasks.gated, str(gate), {"kept": [1, 2]})
        assert isinstance(held, pool.JobFuture) and isinstance(held, concurrent.futures.Future)
        wait_until(lambda: held.progress == pytest.approx(1 / 3), what="its progress heard")
        assert held.running() and not held.done()
        listed = run_pool(spool_dir, "status", check=True).stdout
        assert held.job_id in listed and "running" in listed and "a third" in listed  # a job of the spool
        gate.touch()
        assert held.result(timeout=60) == {"kept": [1, 2]}
        assert status_doc(spool_dir, held.job_id)["state"] == "done"  # type: ignore[index]
    assert not spool_dir.exists() and manager.process.poll() is not None


def test_with_a_manager_serving_the_spool_the_jobs_go_to_it(spool_dir: Path, serve: Callable[..., Server],
                                                             tmp_path: Path) -> None:
    server = serve()
    gate = tmp_path / "gate"
    with pool.Executor(spool=spool_dir, name="from-futures", priority=3) as ex:
        assert ex.manager is None
        future = ex.submit(pooltest_tasks.halfway, str(gate))
        wait_until(lambda: future.progress == 0.3, what="progress heard")
        doc = status_doc(spool_dir, future.job_id)
        assert doc is not None and doc["pid"] and doc["name"] == "from-futures" and doc["priority"] == 3
        gate.touch()
        assert future.result(timeout=60) == "done"
    assert server.proc is not None and server.proc.poll() is None  # not ours to stop
    assert state_of(spool_dir, future.job_id) == "done"  # and kept


def test_what_the_serving_manager_would_refuse_is_refused_at_submit(spool_dir: Path,
                                                                     serve: Callable[..., Server]) -> None:
    serve()
    with pool.Executor(spool=spool_dir) as ex:
        with pytest.raises(pool.TaskNotServed, match="--tasks executor_tasks"):
            ex.submit(executor_tasks.square, 2)
        with pytest.raises(pool.TaskNotServed, match=r"not a @pool\.task"):
            ex.submit(pooltest_tasks.record_run, "x")
        assert ex.submit(pooltest_tasks.add, 2, 3).result(timeout=60) == 5
    assert os.listdir(spool_dir / "rejected") == []  # nothing was sent


def test_a_private_manager_given_tasks_runs_only_theirs(tmp_path: Path) -> None:
    with pool.Executor(max_workers=1, tasks=["pooltest_tasks"]) as ex:
        with pytest.raises(pool.TaskNotServed, match="--tasks executor_tasks"):
            ex.submit(executor_tasks.square, 2)
        assert ex.submit(pooltest_tasks.add, 1, 1).result(timeout=60) == 2


def test_what_cannot_be_sent_by_name_or_as_json_is_refused_at_submit_and_after_shutdown_nothing_is() -> None:
    def nested(x: int) -> int:
        return x

    class Holder:
        def method(self) -> None:
            pass

    ex = pool.Executor(max_workers=1)
    try:
        for fn, why in ((lambda: 1, "lambda"), (nested, "inside a function"), (Holder().method, "bound method"),
                        (functools.partial(executor_tasks.square, 2), "no module-level name"),
                        ([].append, "bound method")):
            with pytest.raises(TypeError, match=why):
                ex.submit(fn)
        with pytest.raises(TypeError, match=r"executor_tasks:square: argument 2 \(object\)"):
            ex.submit(executor_tasks.square, 1, object())
        with pytest.raises(TypeError, match=r"argument 'x' \(int\)"):
            ex.submit(executor_tasks.square, x=2**70)
        with pytest.raises(TypeError, match=r"argument 1 \(set\)"):
            ex.submit(executor_tasks.square, {1})
    finally:
        ex.shutdown()
    assert not ex.spool.path.exists()  # shut down, its private spool removed
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(executor_tasks.square, 2)


def test_failures_are_the_exceptions_the_job_raised_with_its_traceback_as_cause() -> None:
    with pool.Executor(max_workers=2) as ex:
        builtin = ex.submit(executor_tasks.raise_builtin, "k").exception(timeout=60)
        assert type(builtin) is KeyError and builtin.args == ("k",) and str(builtin) == "'k'"
        assert isinstance(builtin.__cause__, pool.RemoteTraceback)
        assert 'raise KeyError(message)' in str(builtin.__cause__)
        odd = ex.submit(executor_tasks.raise_odd, "thing", 3).exception(timeout=60)
        assert type(odd) is executor_tasks.Odd and (odd.what, odd.count) == ("thing", 3)
        local = ex.submit(executor_tasks.raise_local).exception(timeout=60)
        assert type(local) is pool.JobFailed
        assert (local.error_type, local.error_message) == ("Local", "defined where no caller can find it")
        assert "raise Local(" in str(local.__cause__)
        with pytest.raises(ZeroDivisionError):
            list(ex.map(divmod, [1, 1, 1], [2, 0, 3], timeout=60))  # raises at the first failure, as the standard one


def test_a_killed_job_is_cancelled_a_timed_out_one_raises_timeout_error_and_cancel_takes_only_jobs_not_started(
        tmp_path: Path) -> None:
    gate, marker = tmp_path / "gate", tmp_path / "started"
    with pool.Executor(max_workers=1) as ex:
        running = ex.submit(executor_tasks.started_then_gated, str(marker), str(gate))
        queued = ex.submit(executor_tasks.started_then_gated, str(marker), str(gate))
        wait_until(running.running, what="the first job running")
        assert running.cancel() is False and not running.cancelled()  # the standard meaning
        assert queued.cancel() is True and queued.cancelled()
        with pytest.raises(concurrent.futures.CancelledError):
            queued.result(timeout=0)
        running.kill()
        done, _ = concurrent.futures.wait([running], timeout=60)
        assert done == {running} and running.cancelled()
        with pytest.raises(concurrent.futures.CancelledError):
            running.result()
    assert marker.read_text().split() == [running.job_id]  # the cancelled one never started
    with pool.Executor(max_workers=1, timeout=0.2) as ex:
        late = ex.submit(executor_tasks.forever)
        with pytest.raises(concurrent.futures.TimeoutError, match="timed out"):
            late.result(timeout=60)
        assert late.status is not None and late.status.error["type"] == "Timeout"  # type: ignore[index]


def test_a_cancel_of_a_job_not_started_never_stops_one_that_began(tmp_path: Path) -> None:
    """The request a future's cancel() files reaches the manager after its job began (its
    status may say queued a while: it is written with the job's first report): the job
    runs on, and the request is dropped."""
    gate, marker = tmp_path / "gate", tmp_path / "started"
    with pool.Executor(max_workers=1) as ex:
        future = ex.submit(executor_tasks.started_then_gated, str(marker), str(gate))
        wait_until(marker.exists, what="the job started")
        ex.spool.dir.box.file(RequestKind.KILL, future.job_id, unstarted=True)
        wait_until(lambda: not ex.spool.dir.box.is_pending(RequestKind.KILL, future.job_id), what="request taken")
        assert ex.spool.cancel_unstarted([future.job_id]) == {future.job_id: False}
        assert future.cancel() is False
        gate.touch()
        assert future.result(timeout=60) == future.job_id  # never stopped


def test_shutdown_with_cancel_futures_cancels_what_has_not_started_and_waits_for_what_runs(tmp_path: Path) -> None:
    gate, marker = tmp_path / "gate", tmp_path / "started"
    ex = pool.Executor(max_workers=1)
    running = ex.submit(executor_tasks.started_then_gated, str(marker), str(gate))
    waiting = [ex.submit(executor_tasks.started_then_gated, str(marker), str(gate)) for _ in range(5)]
    wait_until(marker.exists, what="the first job started")
    shutdown = threading.Thread(target=ex.shutdown, kwargs={"wait": True, "cancel_futures": True})
    shutdown.start()
    wait_until(lambda: all(f.cancelled() for f in waiting), what="the jobs not started cancelled")
    assert shutdown.is_alive() and not running.done()  # it waits for the one that runs
    gate.touch()
    shutdown.join(60)
    assert running.result(timeout=0) == running.job_id
    assert marker.read_text().split() == [running.job_id]


def test_submit_is_thread_safe_and_wait_and_as_completed_work_on_its_futures() -> None:
    futures: list[pool.JobFuture] = []
    lock = threading.Lock()
    with pool.Executor(max_workers=2) as ex:
        def submit_many(base: int) -> None:
            for n in range(base, base + 40):
                future = ex.submit(executor_tasks.square, n)
                with lock:
                    futures.append(future)

        threads = [threading.Thread(target=submit_many, args=(base,)) for base in (0, 40, 80, 120)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len({f.job_id for f in futures}) == 160
        results = {f.result() for f in concurrent.futures.as_completed(futures, timeout=120)}
        assert results == {n * n for n in range(160)}
        done, not_done = concurrent.futures.wait(futures, timeout=0)
        assert len(done) == 160 and not not_done


def test_attach_gets_a_future_for_a_job_already_in_the_spool(spool_dir: Path, serve: Callable[..., Server],
                                                              tmp_path: Path) -> None:
    serve()
    gate = tmp_path / "gate"
    job = pool.Spool(spool_dir).submit("pooltest_tasks:halfway", str(gate))
    attached = pool.Executor.attach(job.id, spool=spool_dir)
    wait_until(lambda: attached.progress == 0.3, what="its progress heard")
    gate.touch()
    assert attached.result(timeout=60) == "done"
    assert pool.Executor.attach(job.id, spool=spool_dir).result(timeout=0) == "done"  # already ended
    failed = pool.Spool(spool_dir).submit("pooltest_tasks:fail", "no")
    with pytest.raises(ValueError, match="no"):
        pool.Executor.attach(failed.id, spool=spool_dir).result(timeout=60)
    with pytest.raises(pool.JobNotFound):
        pool.Executor.attach("nosuchjob", spool=spool_dir)


CALLER = textwrap.dedent("""
    import signal, sys
    import pool, executor_tasks

    def triple(x):
        return 3 * x

    if __name__ == "__main__":
        ex = pool.Executor(max_workers=2, spool=sys.argv[1] if len(sys.argv) > 1 else None)
        print(ex.submit(triple, 5).result(timeout=60), flush=True)  # a function of the script itself
        futures = [ex.submit(executor_tasks.gated, sys.argv[2], n) for n in range(3)]
        print(ex.spool.path, ex.manager.process.pid, *[f.job_id for f in futures], flush=True)
        while True:
            signal.pause()  # until killed
""")


def test_a_caller_killed_leaves_its_jobs_running_and_attach_gets_them_back(tmp_path: Path) -> None:
    script, gate, spool_dir = tmp_path / "caller.py", tmp_path / "gate", tmp_path / "kept"
    script.write_text(CALLER)
    caller = subprocess.Popen([sys.executable, str(script), str(spool_dir), str(gate)], stdout=subprocess.PIPE,
                              text=True, env=env_for_tests(), cwd=str(tmp_path))
    try:
        assert caller.stdout is not None
        assert caller.stdout.readline() == "15\n"
        path, manager_pid, *ids = caller.stdout.readline().split()
        assert Path(path) == spool_dir and len(ids) == 3
        wait_until(lambda: all(state_of(spool_dir, i) == "running" for i in ids[:2]), what="two running")
    finally:
        caller.kill()
        caller.wait()
    futures = [pool.Executor.attach(i, spool=spool_dir) for i in ids]
    gate.touch()
    assert [f.result(timeout=60) for f in futures] == [0, 1, 2]  # the third ran after the caller died
    # Its owner gone and nothing left to do, the private manager stops.
    wait_until(lambda: not pid_alive(int(manager_pid)), what="the private manager stopped")
    assert not pool.Spool(spool_dir).dir.manager_running()


def test_a_private_manager_killed_fails_pending_futures_with_manager_lost(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    ex = pool.Executor(max_workers=1)
    try:
        running = ex.submit(executor_tasks.gated, str(gate))
        queued = ex.submit(executor_tasks.square, 3)
        wait_until(running.running, what="running")
        assert ex.manager is not None
        os.kill(ex.manager.process.pid, signal.SIGKILL)
        for future in (running, queued):
            with pytest.raises(pool.ManagerLost, match="ended"):
                future.result(timeout=60)
        assert isinstance(queued.exception(), concurrent.futures.BrokenExecutor)
        with pytest.raises(pool.ManagerLost):
            ex.submit(executor_tasks.square, 2)
    finally:
        gate.touch()
        ex.shutdown()


def test_a_function_typed_into_an_interactive_session_is_refused_with_the_reason(tmp_path: Path) -> None:
    code = ("import pool\ndef f(): pass\ntry:\n    pool.Executor(1).submit(f)\n"
            "except TypeError as e:\n    print(e)\n")
    shown = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                           env=env_for_tests(), cwd=str(tmp_path), timeout=60)
    assert "interactive session cannot be imported by a worker" in shown.stdout, shown.stderr


# ---------------------------------------------------------------- the outbox: one file per burst
class HeldDisk:
    """An executor's outbox folder whose first write waits for ``go``, as on a slow disk:
    what is submitted meanwhile waits in the outbox, to be written together."""

    def __init__(self, folder: object) -> None:
        self.folder = folder
        self.go = threading.Event()
        self.names: list[str] = []

    def write_atomic(self, name: str, data: bytes, mode: int) -> None:
        self.names.append(name)
        if len(self.names) == 1:
            assert self.go.wait(60)
        self.folder.write_atomic(name, data, mode)  # type: ignore[attr-defined]


def held(ex: pool.Executor) -> HeldDisk:
    disk = HeldDisk(ex.outbox.folder)
    ex.outbox.folder = disk  # type: ignore[assignment]
    return disk


def test_jobs_submitted_while_a_file_is_written_go_in_one_file_and_a_cancel_takes_one_back() -> None:
    with pool.Executor(max_workers=2) as ex:
        disk = held(ex)
        first = ex.submit(executor_tasks.square, 1)
        wait_until(lambda: disk.names, what="the first job's file being written")
        rest = [ex.submit(executor_tasks.square, n) for n in range(2, 7)]
        dropped = ex.submit(executor_tasks.square, 100)
        assert dropped.cancel() and dropped.cancelled()  # never written: at once, no request
        disk.go.set()
        assert [f.result(timeout=60) for f in (first, *rest)] == [1, 4, 9, 16, 25, 36]
        assert disk.names == [f"{first.job_id}.json", f"{rest[0].job_id}.jsonl"]
        with pytest.raises(pool.JobNotFound):
            ex.spool.status(dropped.job_id)  # it never was a job of the spool
        statuses = [ex.spool.status(f.job_id) for f in rest]
        assert [list(s.spec.args) for s in statuses] == [[n] for n in range(2, 7)]  # in submission order
        assert [s.spec.submitted_at for s in statuses] == sorted(str(s.spec.submitted_at) for s in statuses)


def test_a_refused_file_of_several_jobs_fails_each_of_their_futures_saying_why(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve("--max-file-bytes", "700")  # one job's file passes, ten jobs' do not
    with pool.Executor(spool=spool_dir) as ex:
        disk = held(ex)
        alone = ex.submit(pooltest_tasks.add, 1, 2)
        wait_until(lambda: disk.names, what="the first job's file being written")
        batch = [ex.submit(pooltest_tasks.add, n, n) for n in range(10)]
        disk.go.set()
        assert alone.result(timeout=60) == 3
        concurrent.futures.wait(batch, timeout=60)
        reasons = set()
        for future in batch:
            error = future.exception(timeout=0)
            assert isinstance(error, pool.JobRejected), error
            reasons.add(error.reason)
        assert len(reasons) == 1 and "700" in reasons.pop()
        assert disk.names[1] == f"{batch[0].job_id}.jsonl"


def test_a_job_killed_while_its_file_waits_to_be_taken_in_is_cancelled(spool_dir: Path, serve: Callable[..., Server],
                                                                       tmp_path: Path) -> None:
    server = serve()
    assert server.proc is not None
    with pool.Executor(spool=spool_dir) as ex:
        disk = held(ex)
        first = ex.submit(pooltest_tasks.add, 1, 2)
        wait_until(lambda: disk.names, what="the first job's file being written")
        # The one killed cannot end by itself: the kill may find it started (taken in and
        # handed over in the turn that reads the request), never done.
        batch = [ex.submit(pooltest_tasks.add, 0, 0), ex.submit(pooltest_tasks.hold, str(tmp_path / "gate")),
                 ex.submit(pooltest_tasks.add, 2, 2)]
        server.proc.send_signal(signal.SIGSTOP)  # the manager takes nothing in meanwhile
        try:
            disk.go.set()
            ex.outbox.flush()
            assert (spool_dir / "incoming" / f"{batch[0].job_id}.jsonl").exists()
            batch[1].kill()  # no status yet: the manager is asked to cancel it once it arrives
        finally:
            server.proc.send_signal(signal.SIGCONT)
        assert [first.result(timeout=60), batch[0].result(timeout=60), batch[2].result(timeout=60)] == [3, 0, 4]
        with pytest.raises(concurrent.futures.CancelledError):
            batch[1].result(timeout=60)
        assert status_doc(spool_dir, batch[1].job_id)["state"] == "cancelled"  # type: ignore[index]


def test_an_outbox_file_holds_at_most_its_lines_and_bytes_and_a_big_job_goes_alone() -> None:
    from pool.outbox import MAX_BYTES, MAX_LINES, Outgoing, split

    def jobs(count: int, size: int) -> list[Outgoing]:
        return [Outgoing(f"j{n}", b"x" * size, None) for n in range(count)]  # type: ignore[arg-type]

    assert [len(part) for part in split(jobs(MAX_LINES + 10, 10))] == [MAX_LINES, 10]
    parts = split(jobs(5, MAX_BYTES // 3))  # each file's lines, newlines counted, within MAX_BYTES
    assert [len(part) for part in parts] == [2, 2, 1]
    assert all(sum(len(o.data) + 1 for o in part) <= MAX_BYTES for part in parts)
    big = jobs(3, 10)
    big[1].data = b"x" * (MAX_BYTES * 2)
    assert [[o.job_id for o in part] for part in split(big)] == [["j0"], ["j1"], ["j2"]]
    assert [o.job_id for part in split(jobs(7, 10)) for o in part] == [f"j{n}" for n in range(7)]  # in order


def test_an_executors_limits_hold_for_each_of_its_jobs_and_its_functions_may_checkpoint() -> None:
    with pool.Executor(1, limits={"memory": "200M"}) as executor:
        small, big = executor.submit(executor_tasks.allocate, 20), executor.submit(executor_tasks.allocate, 400)
        saved = executor.submit(executor_tasks.resumes, 3)
        assert small.result(timeout=60) == 20 * 1024 * 1024
        with pytest.raises(pool.JobFailed, match=r"MemoryLimit: used more than 200 MiB of memory"):
            big.result(timeout=60)
        assert saved.result(timeout=60) == [0, 1, 2]
