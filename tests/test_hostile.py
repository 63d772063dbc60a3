"""Hostile and broken input: each lands in rejected/ with a clear reason, the original kept,
the manager serving on, other jobs untouched. And who may get a job run at all."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Callable

import orjson
import pytest

from conftest import Server, drop, job, run_pool, start_running, state_of, status_doc, wait_until
from pool.client import Spool
from pool.safeio import UnsafeFile

GOOD = {"task": "pooltest_tasks:add", "args": [1, 2]}


def good(**fields: object) -> bytes:
    return orjson.dumps({**GOOD, **fields})


# name in incoming/ -> (how to make it, a phrase its rejection reason must contain)
BYTES_CASES: dict[str, tuple[bytes, str]] = {
    "empty.json": (b"", "the file is empty"),
    "truncated.json": (b'{"task": "pooltest_tasks:add", "args": [1', "not valid JSON"),
    "bad-utf8.json": (b'{"task": "pooltest_tasks:add", "name": "\xff\xfe"}', "not valid JSON"),
    "utf16.json": ('{"task": "pooltest_tasks:add"}'.encode("utf-16"), "not valid JSON"),
    "bom.json": (b"\xef\xbb\xbf" + good(), "byte-order mark"),
    "nan.json": (b'{"task": "pooltest_tasks:add", "args": [NaN, 1]}', "not valid JSON"),
    "infinity.json": (b'{"task": "pooltest_tasks:add", "args": [Infinity, 1]}', "not valid JSON"),
    "bigint.json": (b'{"task": "pooltest_tasks:add", "args": [99999999999999999999999, 1]}', "does not fit in 64 bits"),
    "deep.json": (b'{"task": "pooltest_tasks:add", "args": ' + b"[" * 5000 + b"]" * 5000 + b"}", "not valid JSON"),
    "array.json": (b"[1, 2, 3]", "a job must be a JSON object"),
    "id-dotdot-slash.json": (good(id="../x"), "'id' must be"),
    "id-slash.json": (good(id="a/b"), "'id' must be"),
    "id-dotdot.json": (good(id=".."), "'id' must be"),
    "id-long.json": (good(id="x" * 300), "'id' must be"),
    "id-control.json": (good(id="a\x07b"), "'id' must be"),
    "typo.json": (good(retires=1), "unknown key 'retires' (did you mean 'retries'?)"),
    "both.json": (good(command=["true"]), "exactly one of 'task' and 'command'"),
    "-leading-dash.json": (good(oops=1), "unknown key 'oops'"),
    "new\nline.json": (good(oops=1), "unknown key 'oops'"),
    b"bad-\xff-name.json".decode("utf-8", "surrogateescape"): (good(oops=1), "unknown key 'oops'"),
    "loader.json": (orjson.dumps({"command": ["true"], "env": {"LD_PRELOAD": "/tmp/evil.so"}}),
                    "--allow-loader-env"),
    "batch.jsonl": (good(id="ok-line") + b"\n" + good(nope=1) + b"\n", "batch.jsonl line 2: unknown key 'nope'"),
}


def make_special(incoming: Path, outside: Path) -> dict[str, str]:
    """Files that are not plain files of ours; returns name -> expected reason phrase."""
    expected = {}
    sparse = incoming / ".huge.tmp"
    with open(sparse, "wb") as f:
        f.truncate(2 * 1024**3)  # 2 GiB, sparse: rejected by its size, never read
    os.rename(sparse, incoming / "huge.json")
    expected["huge.json"] = "over the limit"
    os.mkfifo(incoming / "fifo.json")
    expected["fifo.json"] = "not a regular file"
    (incoming / "dir.json").mkdir()
    expected["dir.json"] = "is a directory"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(incoming / "socket.json"))
    server.close()
    expected["socket.json"] = "cannot be opened"
    target = outside / "target.json"
    target.write_bytes(good(id="via-link"))
    os.symlink(target, incoming / "link.json")
    expected["link.json"] = "symbolic link"
    original = outside / "hard.json"
    original.write_bytes(good(id="via-hardlink"))
    os.link(original, incoming / "hardlink.json")
    expected["hardlink.json"] = "more than one hard link"
    return expected


def test_every_hostile_input_is_rejected_with_its_reason_and_kept(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    Spool(spool_dir).dir.create()
    incoming = spool_dir / "incoming"
    outside = tmp_path / "outside"
    outside.mkdir()
    expected = make_special(incoming, outside)
    for name, (data, reason) in BYTES_CASES.items():
        drop(spool_dir, name, data)
        expected[name] = reason
    drop(spool_dir, "fine.json", good(id="fine"))
    server = serve("--max-file-bytes", str(1024 * 1024), "--allow-commands")
    rejected = spool_dir / "rejected"
    for name, reason in expected.items():
        error = rejected / f"{name}.error.json"
        # Why is written first, then the entry is moved beside it: both are awaited.
        wait_until(lambda: error.exists() and os.path.lexists(rejected / name),  # noqa: B023 (used at once)
                   what=f"{name!r} rejected")  # the original is kept, untouched
        said = orjson.loads(error.read_bytes())["reason"]
        assert reason in said, (name, said)
    assert not os.listdir(incoming)
    wait_until(lambda: state_of(spool_dir, "fine") == "done", what="the good job ran")
    assert (outside / "target.json").read_bytes() == good(id="via-link")  # the link's target: not moved
    assert os.path.islink(rejected / "link.json")
    assert stat.S_ISFIFO(os.lstat(rejected / "fifo.json").st_mode)
    assert (rejected / "deep.json").read_bytes() == BYTES_CASES["deep.json"][0]
    for job_id in ("via-link", "via-hardlink", "ok-line"):
        assert state_of(spool_dir, job_id) is None, job_id
    assert server.proc is not None and server.proc.poll() is None


@pytest.mark.needs_root("to give a job file to another user")
def test_a_job_file_owned_by_another_user_is_rejected_naming_its_owner(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    Spool(spool_dir).dir.create()
    incoming = spool_dir / "incoming"
    stranger = incoming / ".stranger.tmp"
    stranger.write_bytes(good(id="from-a-stranger"))
    os.chown(stranger, 65534, 65534)
    os.rename(stranger, incoming / "stranger.json")
    serve()
    error, kept = spool_dir / "rejected" / "stranger.json.error.json", spool_dir / "rejected" / "stranger.json"
    # Why is written first, then the file is moved beside it: both are awaited.
    wait_until(lambda: error.exists() and os.path.lexists(kept), what="the stranger's file rejected")
    assert "is owned by uid 65534" in orjson.loads(error.read_bytes())["reason"]
    assert os.lstat(kept).st_uid == 65534  # the original is kept, untouched
    assert state_of(spool_dir, "from-a-stranger") is None


def test_a_duplicate_id_is_rejected_and_the_first_job_untouched(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    serve()
    gate = tmp_path / "gate"
    start_running(spool_dir, "same", "hold", str(gate))
    before = status_doc(spool_dir, "same")
    drop(spool_dir, "second.json", good(id="same"))
    error = spool_dir / "rejected" / "second.json.error.json"
    wait_until(error.exists, what="duplicate rejected")
    assert "id 'same' already exists" in orjson.loads(error.read_bytes())["reason"]
    after = status_doc(spool_dir, "same")
    assert after is not None and before is not None and after["task"] == before["task"]
    gate.touch()
    wait_until(lambda: state_of(spool_dir, "same") == "done", what="the first job done")
    assert status_doc(spool_dir, "same")["result"] == "same"  # type: ignore[index]


@pytest.mark.timeout(600)  # past its own wait: on a loaded machine the burst alone takes minutes
def test_a_burst_of_ten_thousand_files_is_all_accounted_for(spool_dir: Path, serve: Callable[..., Server]) -> None:
    Spool(spool_dir).dir.create()
    serve("--workers", "2")
    incoming = spool_dir / "incoming"
    count = 10_000
    for n in range(count):
        tmp = incoming / f".{n}.tmp"
        tmp.write_bytes(orjson.dumps({"task": "pooltest_tasks:add", "args": [n, 0], "id": f"j{n}"}))
        os.rename(tmp, incoming / f"j{n}.json")

    def done() -> int:  # cheap enough to ask often: parsing 10,000 statuses would starve the manager
        events = spool_dir / "events.jsonl"
        return events.read_bytes().count(b'"to":"done"') if events.exists() else 0

    wait_until(lambda: done() == count, 480, "ten thousand jobs done")
    assert not os.listdir(incoming) and not os.listdir(spool_dir / "rejected")
    results = sorted(s.result for s in Spool(spool_dir).dir.iter_statuses())
    assert results == list(range(count))


# ---------------------------------------------------------------- who may run code

def test_a_link_planted_as_a_log_is_never_followed(
        spool_dir: Path, serve: Callable[..., Server], tmp_path: Path) -> None:
    """Every spool file is opened the safe way, logs too: a link put in a job's log's place
    (by whoever could write logs/) shows nothing of its target, to `pool logs`, its -f, or
    Job.logs(), and says why in one line."""
    serve()
    drop(spool_dir, "x.json", job("add", 1, 2, id="x"))
    wait_until(lambda: state_of(spool_dir, "x") == "done", what="x done")
    secret = tmp_path / "secret"
    secret.write_text("the target's content\n")
    log = spool_dir / "logs" / "x.log"
    log.unlink()
    log.symlink_to(secret)
    for args in (("logs", "x"), ("logs", "-f", "x")):
        result = run_pool(spool_dir, *args)
        assert (result.returncode, result.stdout) == (1, ""), args
        assert result.stderr.count("\n") == 1 and "symbolic link" in result.stderr, result.stderr
    with pytest.raises(UnsafeFile):
        Spool(spool_dir).job("x").logs()


def test_a_spool_others_can_write_into_is_refused(spool_dir: Path) -> None:
    Spool(spool_dir).dir.create()
    os.chmod(spool_dir / "incoming", 0o777)
    result = run_pool(spool_dir, "serve", "--tasks", "pooltest_tasks")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "is writable by every user" in result.stderr
    assert f"chmod o-w {spool_dir / 'incoming'}" in result.stderr


def test_a_new_spool_is_private(spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve()
    for path in (spool_dir, spool_dir / "incoming", spool_dir / "status"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


@pytest.mark.needs_root("the warning shows only as root")
def test_running_as_root_is_warned_about(spool_dir: Path, serve: Callable[..., Server]) -> None:
    server = serve()
    assert "running as root: a member's job runs as her" in server.output()
    server.stop()
    server = serve("--members-as-root")
    assert "running as root with --members-as-root: every job runs as root" in server.output()


def test_loader_variables_need_an_explicit_allowance(spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve("--allow-commands", "--allow-loader-env")
    drop(spool_dir, "l.json", {"command": ["sh", "-c", "echo $LD_LIBRARY_PATH"], "id": "l",
                               "env": {"LD_LIBRARY_PATH": "/opt/lib"}})
    wait_until(lambda: state_of(spool_dir, "l") == "done", what="done")
    assert (spool_dir / "logs" / "l.log").read_text() == "/opt/lib\n"


def test_no_pickle_anywhere() -> None:
    root = Path(__file__).parent.parent
    sources = [p for d in ("pool", "cli") for p in (root / d).rglob("*.py")]
    offenders = [str(p) for p in sources if "pickle" in p.read_text()]
    assert offenders == []  # job data crosses pipes as JSON bytes (send_bytes), never pickled
