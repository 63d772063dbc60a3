"""status/index.final (pool/finalindex.py): `pool status` over many jobs reads one file,
and never shows a line for a file that is not the one it was read from."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import orjson
import pytest
from conftest import Server, drop, job, made, run_pool, state_of, status_doc, wait_until

from pool import finalindex, lifecycle
from pool import finding as finding_module
from pool.finalindex import NAME, FinalIndex, line_of, read_index
from pool.finding import Finding
from pool.jobfile import parse_job
from pool.model import new_status, utc_now
from pool.safeio import Folder
from pool.spool import SpoolDir


def ended(spool: SpoolDir, job_id: str, result: object = 1) -> None:
    now = utc_now()
    status = new_status(parse_job({"task": "m:f", "id": job_id, "name": f"name-{job_id}"}, "t", "t"), now)
    spool.write_status(lifecycle.succeed(lifecycle.start(status, 1, 1, now), result, now))


def indexed_spool(tmp_path: Path, ids: list[str]) -> SpoolDir:
    """A spool whose jobs ended, each with its line, as the manager appends them."""
    spool = SpoolDir(made(tmp_path / "spool"))
    for job_id in ids:
        ended(spool, job_id)
    index = FinalIndex(spool)
    for job_id in ids:
        index.note(job_id)
    index.step(float("inf"), lambda: 0.0)
    index.close()
    return spool


def index_lines(spool: SpoolDir) -> list[bytes]:
    return (spool.status_dir / NAME).read_bytes().splitlines()


def files_read(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of status files read from now on (an index line read instead is not)."""
    names: list[str] = []
    real = Folder.read

    def counted(self: Folder, name: str, *args: object, **kwargs: object) -> bytes:
        names.append(name)
        return real(self, name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Folder, "read", counted)
    return names


def on_disk(spool: SpoolDir) -> set[bytes]:
    return {p.read_bytes() for p in spool.status_dir.glob("*.json")}


def test_a_view_of_every_job_reads_the_index_not_each_file_and_shows_the_files_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = indexed_spool(tmp_path, [f"j{n}" for n in range(20)])
    read = files_read(monkeypatch)
    assert set(Finding(spool.root).documents()) == on_disk(spool)
    assert read == []
    briefs = Finding(spool.root).briefs(["done"])
    assert {b.id for b in briefs} == {f"j{n}" for n in range(20)} and briefs[0].name.startswith("name-j")
    assert Finding(spool.root).briefs(["running"]) == [] and read == []  # ended, as their lines say


def test_a_line_about_a_file_since_replaced_or_removed_is_passed_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = indexed_spool(tmp_path, ["kept", "again", "gone"])
    again = spool.read_status("again")
    spool.write_status(lifecycle.retry(again, utc_now()))  # pool retry: queued again, a new file
    (spool.status_dir / "gone.json").unlink()
    ended(spool, "gone", result="another job of that id")  # a new job of the id: a new file
    read = files_read(monkeypatch)
    docs = {orjson.loads(d)["id"]: orjson.loads(d) for d in Finding(spool.root).documents()}
    assert docs["again"]["state"] == "queued" and docs["gone"]["result"] == "another job of that id"
    assert sorted(read) == ["again.json", "gone.json"]  # the line of "kept" still stands


def test_a_file_edited_in_place_is_read_not_its_line(tmp_path: Path) -> None:
    spool = indexed_spool(tmp_path, ["edited"])
    path = spool.status_dir / "edited.json"
    doc = orjson.loads(path.read_bytes())
    with open(path, "r+b") as f:  # the same inode, written again by hand
        f.write(orjson.dumps({**doc, "name": "x" * 50}))
    [brief] = Finding(spool.root).briefs()
    assert brief.name == "x" * 50


def test_a_line_cut_short_or_glued_to_the_next_is_passed_over_and_the_rest_stand(tmp_path: Path) -> None:
    spool = indexed_spool(tmp_path, ["a", "b", "c"])
    lines = index_lines(spool)
    # A crash cut the second line short, and the next append was glued to what was left.
    damaged = lines[0] + b"\n" + lines[1][:-30] + lines[2] + b"\n"
    (spool.status_dir / NAME).write_bytes(damaged)
    assert set(read_index(spool.statuses, spool.owners)) == {"a"}
    # Cut inside its head: the heads can no longer be parsed together, each is on its own.
    (spool.status_dir / NAME).write_bytes(lines[0] + b"\n" + lines[1][:5] + b"\t" + lines[2] + b"\n")
    assert set(read_index(spool.statuses, spool.owners)) == {"a"}
    assert set(Finding(spool.root).documents()) == on_disk(spool)


def test_lines_read_piece_by_piece_stand_across_pieces_and_a_line_being_appended_is_left(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = indexed_spool(tmp_path, ["a", "b", "c"])
    lines = index_lines(spool)
    (spool.status_dir / NAME).write_bytes(b"\n".join(lines) + b"\n" + lines[0][:40])  # appended to as read
    whole = read_index(spool.statuses, spool.owners)
    assert set(whole) == {"a", "b", "c"}
    for piece in (7, len(lines[0]) - 1, len(lines[0]), len(lines[0]) + 1):  # pieces cut lines in every way
        monkeypatch.setattr(finalindex, "READ_PIECE", piece)
        assert read_index(spool.statuses, spool.owners) == whole


def test_an_index_that_grows_past_its_limit_while_read_is_not_trusted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = indexed_spool(tmp_path, ["a", "b"])
    size = (spool.status_dir / NAME).stat().st_size
    monkeypatch.setattr(finalindex, "MAX_INDEX_BYTES", size)
    assert set(read_index(spool.statuses, spool.owners)) == {"a", "b"}
    with (spool.status_dir / NAME).open("ab") as index:  # after the check of its size at open
        real = Folder.open_checked

        def grown(self: Folder, *args: object, **kwargs: object) -> object:
            opened = real(self, *args, **kwargs)  # type: ignore[arg-type]
            index.write(index_lines(spool)[0] + b"\n")
            index.flush()
            return opened

        monkeypatch.setattr(Folder, "open_checked", grown)
        assert read_index(spool.statuses, spool.owners) == {}


def test_a_listing_pauses_the_garbage_collector_and_gives_it_back_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = indexed_spool(tmp_path, ["a"])
    seen: list[bool] = []
    real = finalindex.add_lines

    def noted(*args: object) -> None:
        seen.append(gc.isenabled())
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(finalindex, "add_lines", noted)
    assert [b.id for b in Finding(spool.root).briefs()] == ["a"]
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:
        Finding(spool.root).briefs()
        assert not gc.isenabled()  # its caller's choice stands
    finally:
        gc.enable()


def test_json_of_more_jobs_than_it_writes_at_a_time_is_every_document_once(tmp_path: Path) -> None:
    from pool.cli.views import JSON_PIECE

    spool = indexed_spool(tmp_path, [f"j{n}" for n in range(JSON_PIECE + 2)])
    shown = orjson.loads(run_pool(spool.root, "status", "--json", check=True).stdout)
    assert sorted(orjson.dumps(doc) for doc in shown) == sorted(orjson.dumps(orjson.loads(d)) for d in on_disk(spool))


def test_an_index_that_is_a_link_a_fifo_or_anothers_is_not_read(tmp_path: Path) -> None:
    spool = indexed_spool(tmp_path, ["a"])
    index = spool.status_dir / NAME
    real = tmp_path / "elsewhere"
    os.rename(index, real)
    index.symlink_to(real)
    assert read_index(spool.statuses, spool.owners) == {}
    index.unlink()
    os.mkfifo(index)
    assert read_index(spool.statuses, spool.owners) == {}  # not opened for a read that would block
    assert [b.id for b in Finding(spool.root).briefs()] == ["a"]  # from its file


def test_a_document_that_is_not_a_final_one_of_its_job_gets_no_line(tmp_path: Path) -> None:
    spool = SpoolDir(made(tmp_path / "spool"))
    queued = new_status(parse_job({"task": "m:f", "id": "q"}, "t", "t"), utc_now())
    spool.write_status(queued)
    data = (spool.status_dir / "q.json").read_bytes()
    st = os.stat(spool.status_dir / "q.json")
    assert line_of("q", data, st) is None  # not final
    ended(spool, "d")
    data, st = (spool.status_dir / "d.json").read_bytes(), os.stat(spool.status_dir / "d.json")
    assert line_of("other", data, st) is None  # another job's
    assert line_of("d", data.replace(b",", b",\n", 1), st) is None  # on two lines
    assert line_of("d", data, st) is not None


def test_compaction_keeps_what_stands_and_what_was_appended_meanwhile_a_slice_a_turn(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(finalindex, "SLICE", 4)
    spool = SpoolDir(made(tmp_path / "spool"))
    index = FinalIndex(spool)
    assert index.open() == set()
    for n in range(12):
        ended(spool, f"j{n}")
        index.note(f"j{n}")
    index.step(float("inf"), lambda: 0.0)
    monkeypatch.setattr(finalindex, "COMPACT_AFTER", 10)  # 12 lines: worth a compaction from now on
    for n in range(6):  # pruned: their lines no longer stand
        (spool.status_dir / f"j{n}.json").unlink()
    turns = 0
    while True:  # each turn's clock is before its deadline at its first look only: a slice a turn
        turns += 1
        if turns == 2:  # a job ends while the compaction is under way
            ended(spool, "j100")
            index.note("j100")
        looks = iter([0.0])
        index.step(0.5, lambda looks=looks: next(looks, 1.0))  # type: ignore[misc]
        if index.compaction is None:
            break
        assert turns < 50
    assert turns == 4  # 12 lines, 4 a turn, and the turn that finds no more
    assert sorted(orjson.loads(line.partition(b"\t")[0])[0] for line in index_lines(spool)) == sorted(
        [f"j{n}" for n in range(6, 12)] + ["j100"])
    assert index.kept == 6 and index.lines == 7


def test_the_manager_appends_each_ended_job_and_a_new_manager_keeps_only_what_stands(spool_dir: Path) -> None:
    server = Server(spool_dir).start()
    try:
        for n in range(5):
            drop(spool_dir, f"j{n}.json", job("add", n, 1, id=f"j{n}"))
        drop(spool_dir, "bad.json", job("fail", "boom", id="bad"))
        drop(spool_dir, "later.json", job("add", 1, 1, id="later", delay=3600))
        wait_until(lambda: all(state_of(spool_dir, f"j{n}") == "done" for n in range(5))
                   and state_of(spool_dir, "bad") == "failed", 30, "the jobs to end")
        spool = SpoolDir(spool_dir)
        wait_until(lambda: (spool.status_dir / NAME).exists() and len(index_lines(spool)) == 6, 30, "six lines")
        assert set(read_index(spool.statuses, spool.owners)) == {"j0", "j1", "j2", "j3", "j4", "bad"}
        as_json = orjson.loads(run_pool(spool_dir, "status", "--json", check=True).stdout)
        assert {orjson.dumps(d) for d in as_json} == on_disk(spool)
        run_pool(spool_dir, "retry", "bad", check=True)
        wait_until(lambda: len(index_lines(spool)) == 7, 30, "the retried job's second line")
        [doc] = [d for d in orjson.loads(run_pool(spool_dir, "status", "--json", check=True).stdout)
                 if d["id"] == "bad"]
        assert doc == status_doc(spool_dir, "bad")
    finally:
        server.stop()
    assert state_of(spool_dir, "later") == "waiting"
    run_pool(spool_dir, "remove", "j0", check=True)
    run_pool(spool_dir, "kill", "later", check=True)  # with no manager: its client writes the end
    assert state_of(spool_dir, "later") == "cancelled"
    server = Server(spool_dir).start()
    try:
        spool = SpoolDir(spool_dir)
        wait_until(lambda: set(read_index(spool.statuses, spool.owners)) == {"j1", "j2", "j3", "j4", "bad", "later"}
                   and len(index_lines(spool)) == 6, 30, "the index compacted at start, and the job ended meanwhile")
    finally:
        server.stop()


def test_an_index_planted_as_a_link_is_replaced_not_written_through(spool_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"not the manager's")
    (made(spool_dir) / "status" / NAME).symlink_to(target)
    server = Server(spool_dir).start()
    try:
        drop(spool_dir, "j.json", job("add", 1, 1, id="j"))
        spool = SpoolDir(spool_dir)
        wait_until(lambda: set(read_index(spool.statuses, spool.owners)) == {"j"}, 30, "the job's line")
        assert not (spool.status_dir / NAME).is_symlink() and target.read_bytes() == b"not the manager's"
    finally:
        server.stop()


def test_a_table_holds_no_document_of_an_ended_job_but_those_it_shows(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A table lists ended jobs from their lines' heads and reads whole only the rows it
    shows: over 100,000 ended jobs it held every document (187 MB)."""
    ids = [f"j{n}" for n in range(5)]
    spool = indexed_spool(tmp_path, ids)
    finding = Finding(spool.root)
    read = files_read(monkeypatch)
    briefs = finding.briefs()
    assert sorted(b.id for b in briefs) == ids and {b.data for b in briefs} == {None} and read == []
    assert [s.to_dict() for s in finding.decoded(briefs[:2])] == [spool.read_status(b.id).to_dict() for b in briefs[:2]]
    assert sorted(read) == sorted([f"{b.id}.json" for b in briefs[:2]] * 2)  # the rows shown, and the check here


def test_json_reads_each_ended_jobs_document_from_the_index_as_it_writes_it(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`pool status --json` held every document before writing one (182 MB at 100,000
    ended jobs): each is now read from the index as it is written, no file opened."""
    ids = [f"j{n}" for n in range(5)]
    spool = indexed_spool(tmp_path, ids)
    finding = Finding(spool.root)
    expected = [(spool.status_dir / f"{b.id}.json").read_bytes() for b in finding.briefs()]
    read = files_read(monkeypatch)
    looked_up: list[str] = []
    real = finding_module.document_at
    monkeypatch.setattr(finding_module, "document_at",
                        lambda fd, line: looked_up.append(line.id) or real(fd, line))  # type: ignore[func-returns-value]
    documents = finding.documents()
    assert next(documents) == expected[0] and len(looked_up) == 1  # one read, as it is yielded
    assert [expected[0], *documents] == expected and len(looked_up) == len(ids) and read == []


@pytest.mark.parametrize("inode", ["new", "the same"])
def test_json_reads_an_ended_jobs_file_when_the_index_was_replaced_since_it_was_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inode: str) -> None:
    """Compacted between the listing and the writing, the index is another file: its
    offsets say nothing of it, even where it got the old one's inode back, and each
    document is read from its job's file instead."""
    ids = [f"j{n}" for n in range(3)]
    spool = indexed_spool(tmp_path, ids)
    finding = Finding(spool.root)
    expected = [(spool.status_dir / f"{b.id}.json").read_bytes() for b in finding.briefs()]
    real = Finding.briefs

    def listed_then_compacted(self: Finding, *args: object, **kwargs: object) -> object:
        listed = real(self, *args, **kwargs)  # type: ignore[arg-type]
        index = spool.status_dir / NAME
        other = b"x" * index.stat().st_size  # whatever is at the old offsets
        if inode == "new":
            (spool.status_dir / "other").write_bytes(other)
            os.replace(spool.status_dir / "other", index)
        else:
            index.write_bytes(other)
        return listed

    monkeypatch.setattr(Finding, "briefs", listed_then_compacted)
    read = files_read(monkeypatch)
    assert list(finding.documents()) == expected and sorted(read) == sorted(f"{i}.json" for i in ids)
