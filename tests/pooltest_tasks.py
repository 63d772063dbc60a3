"""Tasks the end-to-end tests run (served with ``--tasks pooltest_tasks``).

Jobs that must stay running wait for a *gate* file that the test creates: the test
decides when they end, so nothing depends on timing."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pool
from waiting import JOB_PATIENCE, until_killed, wait_for_gate, wait_until


@pool.task
def add(a: int, b: int) -> int:
    print(f"adding {a} and {b}")
    return a + b


@pool.task
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@pool.task
def fail(message: str) -> None:
    print("about to fail")
    raise ValueError(message)


@pool.task
def hold(gate: str, marker_dir: str | None = None) -> str:
    """Run until ``gate`` exists; while running, a marker file says so (to count
    how many run at once, as seen by the jobs themselves)."""
    job_id = os.environ["POOL_JOB_ID"]
    if marker_dir:
        Path(marker_dir, job_id).touch()
        running = len(os.listdir(marker_dir))
        with open(Path(marker_dir).parent / "concurrency.log", "a") as f:
            f.write(f"{running}\n")
    try:
        wait_for_gate(gate)
    finally:
        if marker_dir:
            Path(marker_dir, job_id).unlink()
    return job_id


@pool.task
def halfway(gate: str) -> str:
    """Reports 3 of 10 done, then waits for the gate."""
    pool.progress(3, 10, message="three of ten")
    wait_for_gate(gate)
    pool.progress(10, 10)
    return "done"


@pool.task
def hot_progress(gate: str) -> int:
    """Calls pool.progress in a tight loop until the gate opens."""
    calls = 0
    while not os.path.exists(gate):
        for i in range(1000):
            pool.progress(i, 1000, message=f"call {calls + i}")
        calls += 1000
    return calls


@pool.task
def forever() -> None:
    pool.progress(0.1, message="running until killed")
    until_killed()


@pool.task
def ignore_sigterm(ready: str) -> None:
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Path(ready).touch()
    until_killed()


@pool.task
def exit_hard(code: int) -> None:
    os._exit(code)


@pool.task
def record_order(path: str) -> None:
    with open(path, "a") as f:
        f.write(os.environ["POOL_JOB_ID"] + "\n")


@pool.task
def tqdm_loop(gate: str) -> int:
    """A task with a tqdm loop and no pool.progress call: progress must still show."""
    from tqdm import tqdm

    total = 0
    for i in tqdm(range(10), desc="tqdm loop", mininterval=0):
        if i == 4:
            wait_for_gate(gate)
        total += i
    return total


@pool.task
def fail_times(counter: str, failures: int) -> int:
    """Fails its first ``failures`` runs, then succeeds; returns the run number."""
    runs = record_run(counter)
    if runs <= failures:
        raise RuntimeError(f"failure number {runs}")
    return runs


@pool.task
def counted_hold(runs_file: str, gate: str) -> str:
    """Records each run (to count runs per job), then waits for the gate."""
    record_run(runs_file)
    wait_for_gate(gate)
    return "held"


@pool.task
def counted(runs_file: str, seconds: float = 0.0) -> str:
    record_run(runs_file)
    time.sleep(seconds)  # the job's work: a duration, not a test's wait_for
    return "ok"


def record_run(path: str) -> int:
    """Append this job's id to ``path``; returns how many runs of this job it holds."""
    job_id = os.environ.get("POOL_JOB_ID", "?")
    with open(path, "a") as f:
        f.write(job_id + "\n")
    with open(path) as f:
        return sum(1 for line in f if line.strip() == job_id)


NOT_UTF8 = b"report-\xff.csv".decode("utf-8", "surrogateescape")  # as os.listdir returns such a name


@pool.task
def progress_not_utf8(runs_file: str) -> str:
    """Reports progress naming a file whose name is not UTF-8."""
    record_run(runs_file)
    pool.progress(0.5, message=f"processing {NOT_UTF8}")
    status = Path(os.environ["POOL_SPOOL"], "status", f"{os.environ['POOL_JOB_ID']}.json")
    wait_until(lambda: b"processing report-" in status.read_bytes(), JOB_PATIENCE, "its progress written")
    return "ok"


@pool.task
def fill_the_log(runs_file: str, nbytes: int) -> str:
    """Prints ``nbytes`` (more than the disk holds), shrugging off write errors."""
    record_run(runs_file)
    chunk = b"x" * 65535 + b"\n"
    for _ in range(nbytes // len(chunk)):
        try:
            os.write(1, chunk)
        except OSError:
            pass
    return "printed"


@pool.task
def chatty(count: int) -> int:
    """Prints ``count`` numbered lines, as fast as it can."""
    for n in range(count):
        print(f"line {n:06d}")
    return count


@pool.task
def fail_on_undecodable_name(folder: str) -> None:
    """Fails as a task does on a file name that is not UTF-8 (as os.listdir gives it)."""
    name = os.fsdecode(b"caf\xe9.txt")  # Latin-1 bytes: a lone surrogate in Python's text
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")


@pool.task
def counted_at_once(runs_file: str, marker_dir: str, seconds: float = 0.0) -> str:
    """Records its run, and how many jobs marked in ``marker_dir`` run with it, itself
    included (one line per start in ``<marker_dir>.at-once``): a group's limit as counted by
    its jobs themselves."""
    record_run(runs_file)
    marker = Path(marker_dir, os.environ["POOL_JOB_ID"])
    marker.touch()
    try:
        with open(f"{marker_dir}.at-once", "a") as f:
            f.write(f"{len(os.listdir(marker_dir))}\n")
        time.sleep(seconds)  # the job's work: a duration, not a test's wait_for
    finally:
        marker.unlink()
    return "ok"


@pool.task
def say_then_die_once(counter: str, words: str) -> int:
    """Prints ``words``; its first run then dies at once with its worker (SIGKILL of its
    own process: no outcome, no time for anything after); a later run returns its number."""
    runs = record_run(counter)
    print(f"{words} (run {runs})", flush=True)
    if runs == 1:
        os.kill(os.getpid(), 9)
    return runs


@pool.task
def gated_say_then_die_once(counter: str, words: str, gate: str) -> int:
    """say_then_die_once, once the test's gate is open (its manager killed meanwhile)."""
    wait_for_gate(gate)
    return say_then_die_once(counter, words)


@pool.task
def silent() -> int:
    """Prints nothing."""
    return 7


@pool.task
def stepped(work: str, stop_at: int = -1, gate: str = "", fail_at: int = -1) -> int:
    """100 steps from its last checkpoint on: each is appended to ``work`` (the work done,
    counted by the test), then saved. The first time it reaches step ``stop_at`` it waits
    there for ``gate`` (a test kills it meanwhile); the first time it reaches ``fail_at``
    it fails. Returns the step it started from."""
    start = pool.resume() or 0
    with open(work, "a") as out:
        out.write(f"start {start}\n")
    for step in range(start, 100):
        with open(work, "a") as out:
            out.write(f"{step}\n")
        pool.checkpoint(step + 1)
        pool.progress(step + 1, 100)
        if step + 1 == stop_at and start < stop_at:
            wait_for_gate(gate)
        failed_once = Path(f"{work}.failed")
        if step + 1 == fail_at and not failed_once.exists():
            failed_once.touch()
            raise RuntimeError(f"failed at step {fail_at}")
    return int(start)


@pool.task
def saves(size: int, gate: str = "") -> int:
    """Save a checkpoint of ``size`` bytes (as a JSON string), then wait for ``gate`` if one is named."""
    pool.checkpoint("x" * (size - 2))
    if gate:
        wait_for_gate(gate)
    return size


@pool.task
def uses(megabytes: int, cpu_seconds: float) -> int:
    """Holds ``megabytes`` MiB resident (every page touched) while it burns ``cpu_seconds``
    of CPU; returns the bytes it held."""
    held = bytearray(megabytes * 1024 * 1024)
    for page in range(0, len(held), 4096):
        held[page] = 1
    end = time.process_time() + cpu_seconds
    while time.process_time() < end:
        pass
    return len(held)


@pool.task
def limits_seen() -> dict[str, Any]:
    """What the job runs under: its niceness, its open-files limit, its process."""
    import resource

    return {"nice": os.getpriority(os.PRIO_PROCESS, 0), "open_files": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
            "pid": os.getpid(), "worker": os.getpgrp()}


@pool.task
def steps_on_gates(gates: str, steps: int, say: str = "line") -> int:
    """``steps`` steps, each printed (``say`` and its number) and reported, the next one
    only once the test made ``gates``/<step> (so a test sees each step as it comes)."""
    for step in range(1, steps + 1):
        print(f"{say} {step}", flush=True)
        pool.progress(step, steps, message=f"{say}: step {step} of {steps}")
        wait_for_gate(os.path.join(gates, str(step)))
    return steps
