"""A batch's queued statuses in records (pool/queuedbook.py): a job of a ``.jsonl`` whose
id pool made has no status file of its own until its status first changes, and is found,
listed, killed, removed and run exactly as one that has (issue 23, target 2)."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import orjson
import pytest
from conftest import drop, run_pool
from test_manager_steps import Stepped, closed_after, lifecycle_kill

from pool import lifecycle, queuedbook
from pool.client import Spool
from pool.errors import CorruptStatus, JobNotFound
from pool.executor import Completed, Progress
from pool.finding import Finding
from pool.housekeeping import Housekeeping
from pool.model import State
from pool.queuedbook import RECORD, record_of
from pool.spool import SpoolDir

JOBS = RECORD * 2 + 88  # three records, the last one part full
__all__ = ["closed_after"]  # the fixture that closes every stepped manager a test made


def taken_in(tmp_path: Path, lines: list[bytes] | None = None, slots: int = 0) -> tuple[Stepped, list[str]]:
    """A stepped manager that has taken in a batch (``lines``: JOBS jobs with no ids), none
    started; the ids of its jobs, in order."""
    stepped = Stepped(tmp_path / "spool", slots=slots, any_task=True)
    lines = lines or [b'{"task": "m:f"}'] * JOBS
    drop(stepped.spool_dir, "batch.jsonl", b"\n".join(lines))
    while len(stepped.manager.dispatch.queue.jobs) < len(lines) or stepped.manager.intake.batches:  # type: ignore[union-attr]
        stepped.step()
    ids = sorted(stepped.manager.dispatch.queue.jobs, key=lambda job_id: int(job_id.rpartition("-")[2]))
    return stepped, ids


def files(spool: SpoolDir, suffix: str) -> list[str]:
    return sorted(name for name in os.listdir(spool.status_dir) if name.endswith(suffix))


def run_all(stepped: Stepped) -> list[str]:
    """Let every queued job run and end well, one at a time; the ids in the order started."""
    stepped.executor.slots = 1
    started: list[str] = []
    while stepped.manager.dispatch.queue.jobs or stepped.executor.held:
        stepped.step()
        for job_id in list(stepped.executor.held):
            started.append(job_id)
            stepped.executor.end(job_id, Completed(lifecycle.Succeeded(None), Progress(job_id, 1, 1.0, None), "test"))
    stepped.step()
    return started


def test_a_batchs_jobs_are_queued_in_a_record_each_found_and_listed_as_a_file_would_say(tmp_path: Path) -> None:
    stepped, ids = taken_in(tmp_path)
    spool = stepped.manager.spool
    assert files(spool, ".queued") == sorted({f"{record_of(job_id)}" for job_id in ids}) and len(ids) == JOBS
    assert files(spool, ".json") == []  # no file a job
    finding = Finding(spool.root)
    middle = finding.status(ids[RECORD + 7])
    assert middle.state is State.QUEUED and middle.id == ids[RECORD + 7] and middle.spec.task == "m:f"
    assert sorted(b.id for b in finding.briefs(["queued"])) == sorted(ids)
    assert sorted(orjson.loads(d)["id"] for d in finding.documents()) == sorted(ids)
    assert sorted(spool.status_ids()) == sorted(ids)
    cache: dict[str, tuple[int, object]] = {}  # as a live view keeps it (pool status --watch, pool top)
    for _ in range(2):
        listed = Finding(spool.root).statuses(cache=cache)  # type: ignore[arg-type]
        assert sorted(s.id for s in listed) == sorted(ids) and {s.state for s in listed} == {State.QUEUED}
    assert sorted(s.id for s in Spool(spool.root).statuses("queued")) == sorted(ids)
    shown = orjson.loads(run_pool(spool.root, "status", "--json", check=True).stdout)
    assert {doc["id"]: doc["state"] for doc in shown} == dict.fromkeys(ids, "queued")
    one = run_pool(spool.root, "status", ids[-1], check=True).stdout
    assert ids[-1] in one and "queued" in one


def test_every_job_of_a_record_runs_once_then_the_record_goes(tmp_path: Path) -> None:
    stepped, ids = taken_in(tmp_path)
    started = run_all(stepped)
    assert started == ids  # each once, in the batch's order
    spool = stepped.manager.spool
    assert files(spool, ".queued") == []
    assert {spool.read_status(job_id).state for job_id in ids} == {State.DONE}
    accepted = [e for e in (stepped.spool_dir / "events.jsonl").read_bytes().splitlines() if b'"from":null' in e]
    assert len(accepted) == JOBS


def test_a_record_stays_while_its_batch_is_taken_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim taken in again after a crash finds every record it wrote: none goes before
    the batch is in whole, even once each of its jobs has run."""
    stepped = Stepped(tmp_path / "spool", slots=RECORD * 3, any_task=True)
    intake = stepped.manager.intake
    assert intake is not None
    real = intake._write_some
    monkeypatch.setattr(intake, "_write_some", lambda batch, deadline: real(batch, 0.0))  # a record a turn
    drop(stepped.spool_dir, "batch.jsonl", b"\n".join([b'{"task": "m:f"}'] * JOBS))
    seen: set[str] = set()
    ended = 0
    while intake.batches or not seen:
        stepped.step()
        for job_id in list(stepped.executor.held):  # all of a record start in a turn, and end
            ended += 1
            stepped.executor.end(job_id, Completed(lifecycle.Succeeded(None), Progress(job_id, 1, 1.0, None), "test"))
        seen |= set(files(stepped.manager.spool, ".queued"))
        if intake.batches:
            assert set(files(stepped.manager.spool, ".queued")) == seen
    assert len(seen) == 3 and ended >= RECORD
    stepped.step()
    stepped.step()
    assert files(stepped.manager.spool, ".queued") == []  # then each goes


def test_a_record_stays_while_a_dead_managers_claim_of_its_batch_waits_for_its_writer(tmp_path: Path) -> None:
    """Every job of the record has its file, but its batch's claim, left by a dead
    manager, is not taken in again yet (still open for writing): the record stays for it."""
    stepped, ids = taken_in(tmp_path)
    run_all(stepped)
    spool = stepped.manager.spool
    token = ids[0].partition("-")[0]
    statuses = [spool.read_status(job_id) for job_id in ids[:RECORD]]
    record, data, _ = spool.queued.file(statuses)  # as the dead manager wrote it
    (spool.status_dir / record).write_bytes(data)
    claim = spool.incoming / f".claimed~{token}~batch.jsonl"
    claim.write_bytes(b'{"task": "m:f"}\n' * JOBS)
    stepped.close()
    with claim.open("ab"):  # its writer still has it: not opened yet
        again = Stepped(stepped.spool_dir, slots=0, any_task=True)
        again.step()
        again.step()
        assert files(spool, ".queued") == [record]


def test_a_record_whose_line_stands_for_a_job_with_no_file_stays(tmp_path: Path) -> None:
    """However its jobs were counted, a record goes only once each has a file or is struck."""
    stepped, ids = taken_in(tmp_path)
    book = stepped.manager.spool.queued
    for job_id in ids[:RECORD]:
        book.moved(job_id)  # as if each had its file: none has
    assert book.emptied == {record_of(ids[0])}
    book.remove_emptied(lambda name: False)
    assert f"{record_of(ids[0])}" in files(stepped.manager.spool, ".queued")


def test_a_batch_with_ids_of_its_own_among_its_jobs_gets_a_file_a_job(tmp_path: Path) -> None:
    """A record is written once, whole: a batch whose jobs are not all pool's to name
    (one has an id, one its submitter's environment) is queued a file a job, as before."""
    lines = [b'{"task": "m:f", "id": "mine-%d"}' % n if n % 2 else b'{"task": "m:f"}' for n in range(RECORD + 9)]
    stepped, ids = taken_in(tmp_path, lines)
    spool = stepped.manager.spool
    assert files(spool, ".queued") == [] and len(files(spool, ".json")) == RECORD + 9
    assert sorted(run_all(stepped)) == sorted(ids)


def test_a_job_killed_or_removed_from_its_record_never_comes_back(tmp_path: Path) -> None:
    stepped, ids = taken_in(tmp_path)
    spool = stepped.manager.spool
    killed, removed = ids[3], ids[RECORD + 3]
    spool.box.file(lifecycle_kill(), killed)
    spool.box.file(lifecycle_kill(), removed)
    stepped.step()
    assert spool.read_status(killed).state is State.CANCELLED
    assert files(spool, ".json") == sorted([f"{killed}.json", f"{removed}.json"])  # each has its file now
    Housekeeping(spool.root).remove(removed)
    with pytest.raises(JobNotFound):
        spool.read_status(removed)
    assert removed not in spool.status_ids()
    stepped.close()
    again = Stepped(stepped.spool_dir, slots=0, any_task=True)  # a manager started later finds the rest
    again.step()
    assert sorted(again.manager.dispatch.queue.jobs) == sorted(set(ids) - {killed, removed})
    started = run_all(again)
    assert sorted(started) == sorted(set(ids) - {killed, removed})
    assert files(spool, ".queued") == []
    with pytest.raises(JobNotFound):
        spool.read_status(removed)
    assert spool.read_status(killed).state is State.CANCELLED


def test_a_line_that_is_not_its_jobs_is_set_aside_and_the_rest_run(tmp_path: Path) -> None:
    stepped, ids = taken_in(tmp_path)
    spool = stepped.manager.spool
    record = spool.status_dir / f"{record_of(ids[0])}"
    data = record.read_bytes()
    # One document holds another job, one is cut short: each is refused when it is read.
    data = data.replace(b'{"id":"%s"' % ids[1].encode(), b'{"id":"%s"' % ids[2].encode(), 1)
    start = data.index(b"\n%s\t" % ids[5].encode()) + 1
    end = data.index(b"\n", start)
    data = data[:start] + data[start:end - 20] + data[end:]
    record.write_bytes(data)
    for bad in (ids[1], ids[5]):
        with pytest.raises(CorruptStatus):
            spool.read_status(bad)
    stepped.close()
    again = Stepped(stepped.spool_dir, slots=0, any_task=True)  # reads each line as it starts
    again.step()
    started = run_all(again)
    assert sorted(started) == sorted(set(ids) - {ids[1], ids[5]})
    assert sorted(os.listdir(spool.rejected)) == sorted(
        [f"{ids[1]}.status.json", f"{ids[1]}.status.json.error.json", f"{ids[5]}.status.json",
         f"{ids[5]}.status.json.error.json"])
    assert files(spool, ".queued") == []
    for bad in (ids[1], ids[5]):
        with pytest.raises(JobNotFound):
            spool.read_status(bad)


@pytest.mark.parametrize("planted", ["link", "fifo"])
def test_a_record_that_is_a_link_or_a_fifo_is_never_read_and_goes_whole(tmp_path: Path, planted: str) -> None:
    stepped, ids = taken_in(tmp_path)
    spool = stepped.manager.spool
    record = spool.status_dir / f"{record_of(ids[0])}"
    record.rename(tmp_path / "elsewhere")
    if planted == "link":
        record.symlink_to(tmp_path / "elsewhere")
    else:
        os.mkfifo(record)
    with pytest.raises(CorruptStatus):
        spool.read_status(ids[0])  # never followed, never blocks
    assert ids[0] not in spool.status_ids()
    stepped.close()
    again = Stepped(stepped.spool_dir, slots=0, any_task=True)
    again.step()
    started = run_all(again)
    assert sorted(started) == ids[RECORD:]  # its jobs, set aside with it, never start
    assert not record.exists() and f"{record.name}" in os.listdir(spool.rejected)


@pytest.mark.parametrize("header", [queuedbook.FIRST_HEADER, queuedbook.HEADER + b'{"values":[],"jobs":[]}\n'])
def test_lines_of_pass_over_what_is_not_a_line_of_the_record(header: bytes) -> None:
    name = "0123456789ab~0.queued"
    data = header + b"".join([
        b"0123456789ab-1\tQ\t{}\n",
        b"0123456789ab-2\tX\t{}\n",
        b"0123456789ab-300\tQ\t{}\n",  # another record's
        b"0123456789ab-3\tZ\t{}\n",  # no mark
        b"0123456789ab-4\tQ\t\n",  # no document
        b"0123456789ab-5\tQ\t{}",  # cut short
    ])
    assert list(queuedbook.lines_of(data, name)) == [("0123456789ab-1", b"Q", b"{}"), ("0123456789ab-2", b"X", b"{}")]
    assert list(queuedbook.lines_of(b"not a record\n" + data, name)) == []
    assert queuedbook.listed_in(data, name) is None  # no briefs line that holds (none, or one short)
    assert record_of("0123456789ab-256") == name and record_of("0123456789ab-257") == "0123456789ab~1.queued"
    assert record_of("my-job-1") is None and record_of("0123456789ab-0") is None


def test_a_spool_let_go_leaves_no_descriptor_open(tmp_path: Path) -> None:
    """A program that asks pool.Spool(path) of its jobs, over and over, never runs out of
    descriptors (each spool's folders were left open: a test process ran out of those
    select() can watch)."""
    stepped, ids = taken_in(tmp_path)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(300):
        assert Spool(stepped.spool_dir).status(ids[-1]).state is State.QUEUED
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= before + 2


def test_a_table_lists_a_records_jobs_from_its_briefs_line_each_as_its_document_says(tmp_path: Path) -> None:
    """`pool status` over a million queued jobs parsed a million documents (7 s): it now
    reads what a table needs of each from its record's briefs line, and only the rows it
    shows are read whole. Each job is listed as its document says; a struck one, and one
    with a file of its own, as its file says, not twice."""
    lines = [b'{"task": "m:f", "name": "n%d", "group": "g%d"}' % (n, n % 3) for n in range(RECORD + 20)]
    stepped, ids = taken_in(tmp_path, lines)
    stepped.executor.slots = 1
    stepped.step()
    (ended,) = stepped.executor.held
    stepped.executor.end(ended, Completed(lifecycle.Succeeded(None), Progress(ended, 1, 1.0, None), "test"))
    stepped.executor.slots = 0
    stepped.step()  # its own file now says done
    spool = stepped.manager.spool
    removed = ids[RECORD + 3]
    Housekeeping(spool.root).remove(removed)  # struck in its record
    briefs = Finding(spool.root).briefs()
    assert sorted(b.id for b in briefs) == sorted(set(ids) - {removed})
    for brief in briefs:
        doc = orjson.loads(spool._document(brief.id)[0])
        assert (brief.state.value, brief.created_at, brief.name, brief.group) == \
            (doc["state"], doc["created_at"], doc["name"], doc["group"])
        assert brief.data is None or brief.id == ended  # its file, if the index has no line of it yet
    assert [s.id for s in Finding(spool.root).decoded(briefs[:3])] == [b.id for b in briefs[:3]]
    shown = run_pool(spool.root, "status", "--limit", "0", check=True).stdout
    assert f"{len(ids) - 2} queued" in shown and "1 done" in shown and removed not in shown
    assert all(job_id in shown for job_id in ids if job_id != removed)
    newest = run_pool(spool.root, "status", "--limit", "3", check=True).stdout.split()
    assert [word for word in newest if word in ids] == ids[:-4:-1]  # the batch's end, newest first


def test_a_briefs_line_that_does_not_hold_is_not_believed(tmp_path: Path) -> None:
    """A record is hostile input like any file in the spool: a briefs line that names
    another record's job, a job twice, a mark past the end, a time that is not one, or
    that is not JSON, is passed over, and the record read line by line."""
    stepped, ids = taken_in(tmp_path, [b'{"task": "m:f"}'] * 4)
    spool = stepped.manager.spool
    name = record_of(ids[0])
    assert name is not None
    data = (spool.status_dir / name).read_bytes()
    body = data.index(b"\n", len(queuedbook.HEADER)) + 1
    briefs = orjson.loads(data[len(queuedbook.HEADER):body])
    assert [job[0] for job in queuedbook.listed_in(data, name) or []] == ids
    token = ids[0].rpartition("-")[0]

    def told(change: object) -> bytes:
        changed = orjson.loads(orjson.dumps(briefs))
        change(changed)  # type: ignore[operator]
        return queuedbook.HEADER + orjson.dumps(changed) + b"\n" + data[body:]

    lies = [
        told(lambda b: b["jobs"][0].__setitem__(0, RECORD + 1)),  # another record's line
        told(lambda b: b["jobs"][1].__setitem__(0, 1)),  # the first job twice
        told(lambda b: b["jobs"][0].__setitem__(1, len(data))),  # its mark past the end
        told(lambda b: b["jobs"][0].__setitem__(1, -1)),
        told(lambda b: b["jobs"][0].__setitem__(0, 1.5)),
        told(lambda b: b["values"].__setitem__(b["jobs"][0][3], "yesterday")),  # not a time
        told(lambda b: b["values"].__setitem__(b["jobs"][0][4], 7)),  # a name that is not a string
        told(lambda b: b["jobs"][0].pop()),
        told(lambda b: b["jobs"][0].__setitem__(2, 99)),  # no such value
        told(lambda b: b["jobs"].pop()),  # a line with no brief
        queuedbook.HEADER + b"{not json\n" + data[body:],
    ]
    for lie in lies:
        assert queuedbook.listed_in(lie, name) is None, lie[:200]
        (spool.status_dir / name).write_bytes(lie)
        assert sorted(b.id for b in Finding(spool.root).briefs()) == sorted(ids)  # each read from its line
    assert token == name.partition("~")[0]
