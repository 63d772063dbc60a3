"""pool serve --durable: every state pool acts on is on disk before it acts on it, and the
default mode writes nothing back by force. Proved on the order of the system calls
themselves, as strace -f sees them: a test that watched only files could not tell a
state on disk from one in the page cache."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from conftest import POOL, TESTS, drop, env_for_tests, job, run_pool, state_of, wait_until

TRACED = "fsync,fdatasync,syncfs,openat,rename,renameat,renameat2,unlink,unlinkat,execve,write"
FLUSHES = ("fsync", "fdatasync", "syncfs")
CALL = re.compile(r"^(\d+) +(\w+)\((.*)$")
RESUMED = re.compile(r"^(\d+) +<\.\.\. (\w+) resumed>")
PATH = re.compile(r"^\d+<([^>]*)>")


@dataclass
class Call:
    pid: int
    name: str
    args: str  # as strace printed them (-y: each descriptor with its path)
    start: int  # the trace lines where it began and returned: A before B is A.end < B.start
    end: int

    @property
    def fd_path(self) -> str:
        """The path of the first argument, a descriptor."""
        found = PATH.match(self.args)
        return found.group(1) if found else ""

    def renamed(self) -> tuple[str, str] | None:
        """(source path, target path) of a rename relative to folders."""
        found = re.match(r'\d+<([^>]*)>, "([^"]*)", \d+<([^>]*)>, "([^"]*)"', self.args)
        if not self.name.startswith("rename") or found is None:
            return None
        return f"{found.group(1)}/{found.group(2)}", f"{found.group(3)}/{found.group(4)}"


def parse(trace: Path) -> list[Call]:
    """The calls of a trace in order, each with the line it began on and the line it
    returned on (strace splits a call another process's interrupted in two lines)."""
    calls: list[Call] = []
    open_calls: dict[tuple[int, str], Call] = {}
    for number, line in enumerate(trace.read_text(errors="replace").splitlines()):
        if resumed := RESUMED.match(line):
            call = open_calls.pop((int(resumed.group(1)), resumed.group(2)), None)
            if call is not None:
                call.end = number
            continue
        if (started := CALL.match(line)) is None:
            continue
        call = Call(int(started.group(1)), started.group(2), started.group(3), number, number)
        if line.endswith("<unfinished ...>"):
            open_calls[(call.pid, call.name)] = call
        elif re.search(r"= -1 ", line):
            continue  # failed: it did nothing
        calls.append(call)
    return calls


def traced(trace: Path, *argv: str) -> list[str]:
    return ["strace", "-f", "-y", "-qq", "-s", "65536", "-e", f"trace={TRACED}", "-o", str(trace), *argv]


def run_jobs(spool_dir: Path, tmp_path: Path, *serve_args: str) -> tuple[list[Call], list[Call], int]:
    """Serve under strace: a batch of three jobs, a job saving a checkpoint, a job waiting
    an hour killed by `pool kill` (its end written by the manager), then a command job
    submitted by the CLI (traced too) once the others are done. Returns the server's calls,
    the client's, and the manager's pid."""
    trace, client_trace = tmp_path / "serve.trace", tmp_path / "submit.trace"
    log = open(tmp_path / "serve.log", "wb")
    server = subprocess.Popen(traced(trace, *POOL, "--spool", str(spool_dir), "serve", "--tasks", "pooltest_tasks",
                                     "--workers", "2", "--allow-commands", *serve_args),
                              env=env_for_tests(), stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=str(TESTS))
    try:
        wait_until(lambda: (spool_dir / "manager.pid").exists() or server.poll() is not None, 30, "the manager")
        manager = int((spool_dir / "manager.pid").read_text())
        batch = b"\n".join(orjson.dumps(job("add", n, 1, id=f"b{n}")) for n in range(3))
        drop(spool_dir, "batch.jsonl", batch)
        drop(spool_dir, "records.jsonl", b"\n".join(orjson.dumps(job("add", n, 2)) for n in range(2)))  # no ids
        drop(spool_dir, "c.json", job("saves", 64, id="c"))
        drop(spool_dir, "k.json", job("add", 1, 1, id="k", delay=3600))
        wait_until(lambda: all(state_of(spool_dir, i) == "done" for i in ("b0", "b1", "b2", "c")), 30, "done")
        wait_until(lambda: len([d for d in (spool_dir / "status").glob("*-[12].json")
                                if b'"state":"done"' in d.read_bytes()]) == 2, 30, "the batch of no ids done")
        wait_until(lambda: state_of(spool_dir, "k") == "waiting", 30, "k waiting")
        run_pool(spool_dir, "kill", "k", check=True)
        wait_until(lambda: state_of(spool_dir, "k") == "cancelled", 30, "k cancelled")
        subprocess.run(traced(client_trace, *POOL, "--spool", str(spool_dir), "submit", "--id", "cmd",
                              "--command", "true"), env=env_for_tests(), check=True, capture_output=True, timeout=60)
        wait_until(lambda: state_of(spool_dir, "cmd") == "done", 30, "the command done")
    finally:
        # strace passes no SIGTERM on to what it traces: the manager is its child
        os.kill(int((spool_dir / "manager.pid").read_text()), signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
    return parse(trace), parse(client_trace), manager


def renames_into(calls: Iterable[Call], folder: Path) -> list[tuple[Call, str, str]]:
    found = []
    for call in calls:
        names = call.renamed()
        if names is not None and os.path.dirname(names[1]) == str(folder):
            found.append((call, *names))
    return found


def syncs_of(calls: Iterable[Call], path: Path | str, pid: int | None = None) -> list[Call]:
    return [c for c in calls if c.name in ("fsync", "fdatasync") and c.fd_path == str(path)
            and (pid is None or c.pid == pid)]


def assert_data_synced_before_named(calls: list[Call], renames: list[tuple[Call, str, str]]) -> None:
    """Each file's data is on disk before its name: its own fdatasync, or a syncfs of its
    filesystem between its making and its rename (a batch's statuses, flushed together)."""
    for rename, source, target in renames:
        made = [c for c in calls if c.pid == rename.pid and c.name == "openat" and "O_CREAT" in c.args
                and f'"{os.path.basename(source)}"' in c.args and c.end < rename.start]
        assert made, f"no making of {source} seen"
        assert any(s.pid == rename.pid and s.end < rename.start for s in syncs_of(calls, source)) or any(
            s.pid == rename.pid and s.name == "syncfs" and made[-1].end < s.start and s.end < rename.start
            for s in calls), f"{target} was named before its data was on disk"


@pytest.mark.needs_strace("to see the order of fsyncs, renames and unlinks")
def test_durable_puts_each_state_on_disk_before_pool_acts_on_it(spool_dir: Path, tmp_path: Path) -> None:
    calls, client, manager = run_jobs(spool_dir, tmp_path, "--durable")
    status, incoming = spool_dir / "status", spool_dir / "incoming"
    status_renames = renames_into(calls, status)
    named = {os.path.basename(t) for _, _, t in status_renames}
    assert named >= {"b0.json", "b1.json", "b2.json", "c.json", "cmd.json", "cmd.env"}
    assert [n for n in named if n.endswith(".queued")]  # the batch of no ids: its record (pool/queuedbook.py)
    # Every status document (and a command's environment) is whole on disk before its name.
    assert_data_synced_before_named(calls, status_renames)

    # A job file leaves incoming/ only once its jobs' statuses are named on disk.
    folder_syncs = syncs_of(calls, status, manager)
    claims = [c for c in calls if c.name == "unlinkat" and c.fd_path == str(incoming) and "~" in c.args]
    assert len(claims) >= 4  # the batches, c.json, cmd.json
    for unlink in claims:
        named = [r for r, _, _ in status_renames if r.pid == manager and r.end < unlink.start]
        assert any(named[-1].end < s.start and s.end < unlink.start for s in folder_syncs), unlink.args

    # An outcome is on disk before the manager says so in events.jsonl: one a worker wrote,
    # and one the manager wrote itself (a kill).
    events = [c for c in calls if c.name == "write" and c.fd_path == str(spool_dir / "events.jsonl")]
    for job_id, state in (("b0", "done"), ("b1", "done"), ("b2", "done"), ("c", "done"), ("cmd", "done"),
                          ("k", "cancelled")):
        outcome = [r for r, _, t in status_renames if t == str(status / f"{job_id}.json")][-1]
        assert (outcome.pid == manager) == (job_id == "k")
        said = next(w for w in events if f'\\"id\\":\\"{job_id}\\"' in w.args and f'\\"to\\":\\"{state}\\"' in w.args)
        assert any(outcome.end < s.start and s.end < said.start for s in folder_syncs), job_id

    # A checkpoint is on disk, data then name, before pool.checkpoint() returns (the job's
    # outcome is written after it).
    saved = renames_into(calls, spool_dir / "checkpoints" / "c")
    assert saved
    assert_data_synced_before_named(calls, saved)
    c_outcome = next(r for r, _, t in status_renames if t == str(status / "c.json") and r.pid == saved[-1][0].pid)
    assert any(saved[-1][0].end < s.start and s.end < c_outcome.start
               for s in syncs_of(calls, spool_dir / "checkpoints" / "c"))

    # An attempt's start marker is on disk before the job's code runs: after a power cut,
    # the attempt is counted, never run again as if it had not begun.
    queued = next(r for r, _, t in status_renames if t == str(status / "cmd.json") and r.pid == manager)
    exec_true = next(c for c in calls if c.name == "execve" and '"true"' in c.args)
    markers = [c for c in calls if c.name == "fdatasync" and c.fd_path.startswith(str(spool_dir / "workers") + "/")]
    assert any(queued.end < m.start and m.end < exec_true.start for m in markers)

    # The client's job file is on disk, data and name, before `pool submit` returns.
    submitted = renames_into(client, incoming)
    assert [os.path.basename(t) for _, _, t in submitted] == ["cmd.json"]
    assert_data_synced_before_named(client, submitted)
    assert any(submitted[0][0].end < s.start for s in syncs_of(client, incoming))


@pytest.mark.needs_strace("to count fsyncs")
def test_default_mode_forces_nothing_to_disk(spool_dir: Path, tmp_path: Path) -> None:
    """Durability is asked for: without --durable, what pool writes reaches the disk when
    the kernel writes it back, and no call of the manager, its workers or a client waits
    for the disk."""
    calls, client, _ = run_jobs(spool_dir, tmp_path)
    assert renames_into(calls, spool_dir / "status")  # the trace saw the work
    assert [c for c in calls + client if c.name in FLUSHES] == []
