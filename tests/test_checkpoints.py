"""Checkpoints (pool/checkpoints.py): a job killed at step 60 of 100 goes on from step 60,
whatever killed it; `pool retry --fresh` starts it afresh; a command gets the same
through $POOL_CHECKPOINT; a checkpoint over the limit fails its job, not the manager.
The pure part (saving, reading back, what a hostile folder does to them) is tested
on its own first."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from conftest import Server, drop, job, log_text, pid_alive, process_tree, run_pool, state_of, status_doc, wait_until

import pool
from pool.checkpoints import CheckpointBook, CheckpointError, JobCheckpoint, attempt_checkpoint
from pool.requests import RequestBox, RequestKind
from pool.safeio import Folder, Owners

STEPS = 100


# ---------------------------------------------------------------- the pure part
@pytest.fixture
def checkpoints(tmp_path: Path) -> Path:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    return folder


def test_a_first_attempt_resumes_nothing_and_gets_back_what_it_saved(checkpoints: Path) -> None:
    with attempt_checkpoint(str(checkpoints), "j", 1 << 20):
        assert pool.resume() is None
        assert not (checkpoints / "j").exists()  # a job that never saves makes no folder
        pool.checkpoint({"step": 60, "seen": ["a", "é"]})
        pool.checkpoint({"step": 61, "seen": ["a", "é"]})
        assert pool.resume() == {"step": 61, "seen": ["a", "é"]}
    assert sorted(os.listdir(checkpoints / "j")) == ["state"]  # no temp file left
    assert stat.S_IMODE((checkpoints / "j" / "state").stat().st_mode) == 0o600
    with attempt_checkpoint(str(checkpoints), "j", 1 << 20):  # the next attempt
        assert pool.resume() == {"step": 61, "seen": ["a", "é"]}


def test_outside_a_job_checkpoint_does_nothing_and_resume_is_none() -> None:
    pool.checkpoint({"step": 1})
    assert pool.resume() is None


@pytest.mark.parametrize("state, why", [
    ("x" * 200, "over the limit of 100 bytes"),
    (object(), "cannot save the checkpoint: Type is not JSON serializable"),
    (2 ** 70, "cannot save the checkpoint: Integer exceeds 64-bit range"),
    ("\ud800", "cannot save the checkpoint: str is not valid UTF-8"),
])
def test_a_state_that_cannot_be_saved_is_an_error_in_the_job_and_keeps_the_last(
        checkpoints: Path, state: object, why: str) -> None:
    saver = JobCheckpoint(str(checkpoints), "j", 100)
    saver.save([1, 2])
    with pytest.raises(CheckpointError, match=why):
        saver.save(state)
    assert saver.load() == [1, 2]


def test_a_checkpoint_grown_past_the_limit_is_an_error_when_read(checkpoints: Path) -> None:
    JobCheckpoint(str(checkpoints), "j", 1000).save("x" * 500)
    with pytest.raises(CheckpointError, match="is 502 bytes, over the limit of 100 bytes"):
        JobCheckpoint(str(checkpoints), "j", 100).load()


def test_a_checkpoint_that_is_not_json_says_how_to_start_afresh(checkpoints: Path) -> None:
    (checkpoints / "j").mkdir()
    (checkpoints / "j" / "state").write_bytes(b'{"step": 6')
    with pytest.raises(CheckpointError, match=r"is not JSON .*pool retry --fresh"):
        JobCheckpoint(str(checkpoints), "j", 1000).load()


def test_links_and_fifos_in_the_checkpoint_folder_are_never_followed(checkpoints: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "state").write_bytes(b'"secret"')
    os.symlink(elsewhere, checkpoints / "linked")
    linked = JobCheckpoint(str(checkpoints), "linked", 1000)
    with pytest.raises(CheckpointError, match="cannot save"):
        linked.save("overwrite")
    with pytest.raises(CheckpointError, match="cannot read"):
        linked.load()
    assert (elsewhere / "state").read_bytes() == b'"secret"'
    (checkpoints / "j").mkdir()
    os.symlink(elsewhere / "state", checkpoints / "j" / "state")
    with pytest.raises(CheckpointError, match="a link"):
        JobCheckpoint(str(checkpoints), "j", 1000).load()
    (checkpoints / "f").mkdir()
    os.mkfifo(checkpoints / "f" / "state")
    with pytest.raises(CheckpointError, match="not a file this job saved"):  # and never blocks
        JobCheckpoint(str(checkpoints), "f", 1000).load()


def test_a_save_its_process_never_finished_leaves_the_last_one_and_its_temp_goes(checkpoints: Path) -> None:
    JobCheckpoint(str(checkpoints), "j", 1000).save(59)
    dead_writer = checkpoints / "j" / ".state.999999999.0000002a.tmp"  # killed mid-save
    dead_writer.write_bytes(b"6")
    resumed = JobCheckpoint(str(checkpoints), "j", 1000)
    assert resumed.load() == 59
    assert not dead_writer.exists()


def test_the_book_stats_without_reading_and_removes_whatever_the_job_left(checkpoints: Path, tmp_path: Path) -> None:
    book = CheckpointBook(Folder(checkpoints))
    assert book.saved("j") is None
    JobCheckpoint(str(checkpoints), "j", 1000).save("abc")
    saved = book.saved("j")
    assert saved is not None and saved.bytes == 5
    (checkpoints / "j" / "deep" / "er").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("kept")
    os.symlink(outside, checkpoints / "j" / "deep" / "link")
    book.remove("j")
    assert not (checkpoints / "j").exists()
    assert (outside / "keep").read_text() == "kept"  # a link inside is removed, never followed
    book.remove("j")  # nothing there: nothing to do
    deep = checkpoints / "deep"
    (deep / "/".join(["d"] * 40)).mkdir(parents=True)
    with pytest.raises(OSError, match="more than 32 nested folders"):
        book.remove("deep")  # a job that nests deeper keeps its folder, and the caller says why
    os.symlink(outside, checkpoints / "linked")
    book.remove("linked")  # a link where a job's folder should be: the link goes, never what it names
    assert not os.path.lexists(checkpoints / "linked") and (outside / "keep").exists()


def test_a_retry_request_carries_fresh(tmp_path: Path) -> None:
    box = RequestBox(tmp_path)
    box.file(RequestKind.RETRY, "a", fresh=True)
    box.file(RequestKind.RETRY, "b")
    found, bad = box.pending(Owners(os.geteuid()))
    assert not bad and {r.job_id: r.fresh for r in found} == {"a": True, "b": False}


# ---------------------------------------------------------------- a real manager
def checkpoint_of(spool_dir: Path, job_id: str) -> object:
    path = spool_dir / "checkpoints" / job_id / "state"
    return orjson.loads(path.read_bytes()) if path.exists() else None


def steps_done(work: Path) -> list[int]:
    return [int(line) for line in work.read_text().split("\n") if line.isdigit()]


def starts(work: Path) -> list[int]:
    return [int(line.split()[1]) for line in work.read_text().splitlines() if line.startswith("start")]


def run_until_step_60(spool_dir: Path, tmp_path: Path) -> tuple[int, Path, Path]:
    """The 100-step job, saving each step, held at step 60: (its worker's pid, its work, its gate)."""
    work, gate = tmp_path / "work", tmp_path / "gate"
    drop(spool_dir, "s.json", job("stepped", str(work), 60, str(gate), id="s", retries=2, retry_delay=0))
    wait_until(lambda: checkpoint_of(spool_dir, "s") == 60, what="the checkpoint of step 60")
    pid = wait_until(lambda: (d := status_doc(spool_dir, "s")) and d["state"] == "running" and d["pid"],
                     what="its pid in its status")
    return pid, work, gate


def assert_resumed_at_60(spool_dir: Path, work: Path, attempt: int = 2) -> None:
    wait_until(lambda: state_of(spool_dir, "s") == "done", what="done")
    doc = status_doc(spool_dir, "s")
    assert doc is not None and doc["result"] == 60 and doc["attempt"] == attempt
    assert starts(work) == [0, 60]
    done = steps_done(work)
    assert sorted(set(done)) == list(range(STEPS)) and len(done) <= STEPS + 1
    assert not (spool_dir / "checkpoints" / "s").exists()  # done: a run of it again starts afresh


def test_a_job_whose_worker_is_killed_at_step_60_goes_on_from_step_60(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve()
    pid, work, _ = run_until_step_60(spool_dir, tmp_path)
    os.kill(pid, signal.SIGKILL)
    assert_resumed_at_60(spool_dir, work)


def test_a_job_whose_manager_and_workers_are_killed_at_step_60_goes_on_from_step_60(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    first = serve("--workers", "2")
    pid, work, _ = run_until_step_60(spool_dir, tmp_path)
    everything = process_tree(first.pid)[1:]  # its forkserver and its workers
    assert pid in everything
    first.stop(signal.SIGKILL)
    for process in everything:
        with contextlib.suppress(ProcessLookupError):  # its forkserver ends with the manager
            os.kill(process, signal.SIGKILL)
    wait_until(lambda: not any(map(pid_alive, everything)), what="all of them gone")
    serve()
    assert_resumed_at_60(spool_dir, work)


def test_a_job_interrupted_by_a_managers_stop_at_step_60_goes_on_from_step_60(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    first = serve("--grace", "0.2", "--kill-grace", "0.2")
    _, work, _ = run_until_step_60(spool_dir, tmp_path)
    first.stop()  # SIGTERM: the job, still at its gate after the grace, is stopped and put back, uncounted
    assert (status_doc(spool_dir, "s") or {})["state"] == "queued"
    serve()
    assert_resumed_at_60(spool_dir, work, attempt=1)


@pytest.mark.parametrize("served", [True, False], ids=["by-the-manager", "with-no-manager"])
@pytest.mark.parametrize("fresh", [False, True], ids=["retry", "retry-fresh"])
def test_pool_retry_resumes_and_retry_fresh_starts_afresh(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path, fresh: bool, served: bool) -> None:
    manager = serve()
    work = tmp_path / "work"
    drop(spool_dir, "r.json", job("stepped", str(work), kwargs={"fail_at": 30}, id="r"))
    wait_until(lambda: state_of(spool_dir, "r") == "failed", what="failed at step 30")
    assert checkpoint_of(spool_dir, "r") == 30
    if not served:
        manager.stop()
    result = run_pool(spool_dir, "retry", *(["--fresh"] if fresh else []), "r")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "r: queued"
    if not served:  # (a manager may have run it to its end already: success removes it)
        assert checkpoint_of(spool_dir, "r") == (None if fresh else 30)
        serve()
    wait_until(lambda: state_of(spool_dir, "r") == "done", what="done")
    assert starts(work) == [0, 0 if fresh else 30]
    assert (status_doc(spool_dir, "r") or {})["result"] == (0 if fresh else 30)


def test_a_command_saves_and_resumes_through_pool_checkpoint(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve("--allow-commands")
    # The README's shell example: read the last state, write a temp beside it, rename.
    script = ('n=$(cat "$POOL_CHECKPOINT" 2>/dev/null || echo 0); echo "resumed at $n"; '
              'while [ "$n" -lt 5 ]; do n=$((n + 1)); '
              'echo "$n" > "$POOL_CHECKPOINT.tmp" && mv "$POOL_CHECKPOINT.tmp" "$POOL_CHECKPOINT"; '
              'if [ "$n" -eq 3 ] && [ ! -e "$1" ]; then touch "$1"; exit 1; fi; done')
    drop(spool_dir, "c.json", {"id": "c", "command": ["sh", "-c", script, "sh", str(tmp_path / "failed")],
                               "retries": 1, "retry_delay": 0})
    wait_until(lambda: state_of(spool_dir, "c") == "done", what="done")
    assert [line for line in log_text(spool_dir, "c").splitlines() if "resumed" in line] == \
        ["resumed at 0", "resumed at 3"]
    assert not (spool_dir / "checkpoints" / "c").exists()


def test_a_command_that_saves_nothing_leaves_no_folder(spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve("--allow-commands")
    drop(spool_dir, "e.json", {"id": "e", "command": ["sh", "-c", "exit 3"]})
    wait_until(lambda: state_of(spool_dir, "e") == "failed", what="failed")
    assert os.listdir(spool_dir / "checkpoints") == []


def test_a_checkpoint_over_the_limit_fails_its_job_and_nothing_else(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve("--max-checkpoint-bytes", "1000")
    drop(spool_dir, "big.json", job("saves", 1001, id="big"))
    drop(spool_dir, "small.json", job("saves", 1000, id="small"))
    wait_until(lambda: state_of(spool_dir, "big") == "failed" and state_of(spool_dir, "small") == "done",
               what="both ended")
    error = (status_doc(spool_dir, "big") or {})["error"]
    assert error["type"] == "CheckpointError"
    assert error["message"] == ("the checkpoint is 1001 bytes, over the limit of 1000 bytes "
                                "(pool serve --max-checkpoint-bytes)")
    drop(spool_dir, "after.json", job("add", 1, 2, id="after"))
    wait_until(lambda: state_of(spool_dir, "after") == "done", what="the manager goes on")


def test_pool_status_shows_when_the_checkpoint_was_taken_and_its_size(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve()
    gate = tmp_path / "gate"
    drop(spool_dir, "k.json", job("saves", 4200, str(gate), id="k"))
    wait_until(lambda: checkpoint_of(spool_dir, "k") is not None, what="saved")
    shown = run_pool(spool_dir, "status", "k", check=True).stdout
    assert re.search(r"^checkpoint: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ, 4\.1 KiB \(\d+s ago\)$", shown, re.M), shown
    gate.touch()
    wait_until(lambda: state_of(spool_dir, "k") == "done", what="done")
    assert "checkpoint:" not in run_pool(spool_dir, "status", "k", check=True).stdout


def test_removing_a_job_removes_its_checkpoint(spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve()
    work = tmp_path / "work"
    drop(spool_dir, "r.json", job("stepped", str(work), kwargs={"fail_at": 10}, id="r"))
    wait_until(lambda: state_of(spool_dir, "r") == "failed", what="failed")
    assert checkpoint_of(spool_dir, "r") == 10  # a failed job keeps it, for `pool retry`
    run_pool(spool_dir, "remove", "r", check=True)
    assert not (spool_dir / "checkpoints" / "r").exists()
