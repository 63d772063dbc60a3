"""Who may get a job run, with real second users: the README's "Who may get a job run"
and pool/spool.py's layouts, checked against what another user can actually do.

CI runs as root: the tests create a group ``pooltest`` with members ``pooltest-alice``
and ``pooltest-bob``, and ``pooltest-mallory`` who is not one (users and groups stay, the
spools go). The users act only through the shell (``runuser -u USER -- sh -c ...``):
they write job and request files, plant links, read with cat. Every spool lives in a
fresh folder under /tmp that they can reach. The attacks (a spool made by another user,
a member planting links and asking to kill another member's jobs) are what these tests
turn into promises."""

from __future__ import annotations

import grp
import multiprocessing
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest

from conftest import (
    POOL,
    Server,
    drop,
    env_for_tests,
    log_text,
    pid_alive,
    process_tree,
    refused,
    state_of,
    status_doc,
    wait_until,
)

GROUP = "pooltest"  # the group a shared spool is served to
USERS_GROUP = "pooltest-users"  # the test users' primary group: not GROUP, so mallory is no member
ALICE, BOB, MALLORY = "pooltest-alice", "pooltest-bob", "pooltest-mallory"
TASKS = ("--tasks", "promise_users_tasks")
FINAL = ("done", "failed", "cancelled")
ORIGINAL = b"ROOT-ONLY ORIGINAL\n"
ATTACK_LINE = "* * * * * root /tmp/evil.sh"

pytestmark = pytest.mark.needs_root("to create users and act as them: useradd, runuser")


class Uids(NamedTuple):
    alice: int
    bob: int
    mallory: int


# ---------------------------------------------------------------- users, places, managers
def _run(*argv: str) -> None:
    result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{' '.join(argv)} exited {result.returncode}: {result.stderr}"


def _ensure_group(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        subprocess.run(["groupadd", name], check=False, capture_output=True, timeout=60)  # may race: look again
        return grp.getgrnam(name).gr_gid


def _ensure_user(name: str, member: bool) -> int:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-M", "-N", "-g", USERS_GROUP, "-s", "/bin/sh", name], check=False,
                       capture_output=True, timeout=60)
    entry = pwd.getpwnam(name)
    shared = grp.getgrnam(GROUP)
    if entry.pw_gid == shared.gr_gid:  # a user left over with the shared group as primary
        _run("usermod", "-g", USERS_GROUP, name)
    if member and name not in shared.gr_mem:
        _run("usermod", "-aG", GROUP, name)
    if not member and name in shared.gr_mem:
        _run("gpasswd", "-d", name, GROUP)
    groups = subprocess.run(["id", "-nG", name], check=False, capture_output=True, text=True, timeout=60).stdout.split()
    assert (GROUP in groups) is member, f"{name} is in groups {groups}"
    return entry.pw_uid


@pytest.fixture(scope="module")
def uids() -> Uids:
    """The test users, created if missing (idempotent)."""
    for tool in ("runuser", "useradd", "groupadd", "usermod", "gpasswd"):
        assert shutil.which(tool), f"{tool} is needed to create and act as the test users"
    _ensure_group(GROUP)
    _ensure_group(USERS_GROUP)
    return Uids(_ensure_user(ALICE, True), _ensure_user(BOB, True), _ensure_user(MALLORY, False))


def as_user(user: str, script: str, *args: object) -> subprocess.CompletedProcess[str]:
    """Run a shell script as ``user``; ``args`` are its $1, $2, ... (never spliced into it)."""
    return subprocess.run(["runuser", "-u", user, "--", "sh", "-c", script, "sh", *map(str, args)],
                          check=False, capture_output=True, text=True, timeout=30, cwd="/")


def submit_as(user: str, spool: Path, job: dict[str, Any]) -> None:
    """The user writes a job file beside incoming/'s entries under a hidden name, then renames it in."""
    name = job["id"]
    done = as_user(user, 'printf "%s" "$2" > "$1/.$3.tmp" && mv "$1/.$3.tmp" "$1/$3.json"',
                   spool / "incoming", orjson.dumps(job).decode(), name)
    assert done.returncode == 0, f"{user} could not submit {name}: {done.stderr}"


def request_as(user: str, spool: Path, request: str) -> None:
    """The user files requests/<request> the way `pool kill` does: a temp file renamed in."""
    done = as_user(user, 'printf "{}" > "$1/.$2.tmp" && mv "$1/.$2.tmp" "$1/$2"', spool / "requests", request)
    assert done.returncode == 0, f"{user} could not file requests/{request}: {done.stderr}"


@pytest.fixture
def place(uids: Uids) -> Iterator[Path]:
    """A fresh folder under /tmp that other users can reach (pytest's tmp_path may not be)."""
    base = Path(tempfile.mkdtemp(prefix="pool-users-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def root_only(place: Path, name: str) -> Path:
    """A file only root may read or write, in a folder only root may enter."""
    folder = place / "root-only"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / name
    path.write_bytes(ORIGINAL)
    os.chmod(path, 0o600)
    return path


def untouched(path: Path) -> bool:
    st = os.lstat(path)
    return stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and path.read_bytes() == ORIGINAL


@pytest.fixture
def managers(place: Path) -> Iterator[Callable[..., Server]]:
    """Start ``pool serve`` (as root) on a spool in ``place``; all are stopped afterwards,
    and their logs printed (pytest shows them when a test fails)."""
    started: list[Server] = []

    def start(spool: Path, *args: str, wait: bool = True) -> Server:
        server = Server(spool, *TASKS, *args)
        started.append(server)
        return server.start(wait=wait)

    yield start
    (place / "gate").touch()  # lets any job still holding end
    for server in started:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()
    for log in dict.fromkeys(server.log for server in started):  # servers of one spool share a log
        print(f"--- {log} ---\n{log.read_text(errors='replace') if log.exists() else ''}")


def say(job_id: str, text: str) -> dict[str, Any]:
    return {"id": job_id, "task": "promise_users_tasks:say", "args": [text]}


# ---------------------------------------------------------------- 1. a spool of another user
@pytest.mark.parametrize("owned_by_mallory", ["spool", "logs"])
def test_a_spool_prepared_by_another_user_is_refused(
        owned_by_mallory: str, uids: Uids, place: Path, managers: Callable[..., Server]) -> None:
    """Found by attack: mallory makes the spool folder (or its logs/) herself, with
    logs/nightly.log a link to a root-only file; root's `pool serve` must not serve it."""
    victim = root_only(place, "victim")
    spool = place / "spool"
    if owned_by_mallory == "spool":
        os.chmod(place, 0o1777)  # like /tmp: anyone may make a folder here first
        made = as_user(MALLORY, 'mkdir -m 755 "$1" "$1/logs" && ln -s "$2" "$1/logs/nightly.log"', spool, victim)
        owned = spool
    else:
        spool.mkdir(mode=0o755)
        for name in ("incoming", "status", "logs", "rejected", "requests"):
            (spool / name).mkdir(mode=0o700)
        os.chown(spool / "logs", uids.mallory, -1)
        os.chmod(spool / "logs", 0o755)
        made = as_user(MALLORY, 'ln -s "$2" "$1/logs/nightly.log"', spool, victim)
        owned = spool / "logs"
    assert made.returncode == 0, made.stderr

    server = managers(spool, wait=False)
    proc = server.proc
    assert proc is not None
    wait_until(lambda: proc.poll() is not None or server.ready(), 30, "pool serve to refuse the spool")
    if proc.poll() is None:  # it serves: show what that costs, then fail
        drop(spool, "nightly.json", say("nightly", ATTACK_LINE))
        wait_until(lambda: state_of(spool, "nightly") in FINAL, 30, "the nightly job to end")
        server.stop()
        raise AssertionError(f"pool serve (root) served {owned}, owned by {MALLORY}; the root-only file "
                             f"{'is untouched' if untouched(victim) else 'now holds ' + repr(victim.read_bytes())}")
    assert proc.returncode == 1, server.output()
    lines = server.output().strip().splitlines()
    assert len(lines) == 1, f"not a one-line error: {lines}"
    assert str(owned) in lines[0] and f"uid {uids.mallory}" in lines[0], lines[0]
    assert untouched(victim)
    assert os.path.islink(spool / "logs" / "nightly.log")  # mallory's link is left as it was, unfollowed
    assert not os.path.lexists(spool / "manager.pid")


# ---------------------------------------------------------------- 2. a shared spool
def test_a_member_submits_a_job_and_reads_its_status_and_log(
        uids: Uids, place: Path, managers: Callable[..., Server]) -> None:
    spool = place / "spool"
    managers(spool, "--group", GROUP)
    submit_as(ALICE, spool, say("from-alice", "hello from alice"))
    wait_until(lambda: state_of(spool, "from-alice") in FINAL, 30, "alice's job to end")

    read = as_user(ALICE, 'cat "$1"', spool / "status" / "from-alice.json")
    assert read.returncode == 0, f"alice cannot read her job's status: {read.stderr}"
    doc = orjson.loads(read.stdout)
    assert (doc["id"], doc["state"], doc["result"]) == ("from-alice", "done", len("hello from alice"))
    assert doc["submitter"] == uids.alice
    log = as_user(ALICE, 'cat "$1"', spool / "logs" / "from-alice.log")
    assert log.returncode == 0, f"alice cannot read her job's log: {log.stderr}"
    assert "hello from alice" in log.stdout

    stranger = as_user(MALLORY, 'cat "$1"', spool / "status" / "from-alice.json")
    assert stranger.returncode != 0, "mallory, no member, read a status of the shared spool"


def test_a_member_cannot_write_where_only_the_manager_writes(
        uids: Uids, place: Path, managers: Callable[..., Server]) -> None:
    """Found by attack: in a shared spool a member plants links in logs/, status/ and the
    spool's root, and the root manager writes through them. She must not be able to."""
    spool = place / "spool"
    server = managers(spool, "--group", GROUP)
    assert server.proc is not None
    victim = root_only(place, "victim")
    submit_as(ALICE, spool, say("first", "a first job, so that events.jsonl and a status exist"))
    wait_until(lambda: state_of(spool, "first") == "done", 30, "the first job done")

    # Where members may write, she can (so a refusal below is the permissions, not the method).
    probe = as_user(ALICE, 'for d in incoming requests; do : > "$1/$d/.probe.tmp" && rm "$1/$d/.probe.tmp" || exit 1; '
                           "done", spool)
    assert probe.returncode == 0, f"alice cannot write into incoming/ or requests/: {probe.stderr}"
    outsider = as_user(MALLORY, ': > "$1/incoming/.m.tmp" || : > "$1/requests/.m.tmp"', spool)
    assert outsider.returncode != 0, "mallory, no member, could write into the shared spool"

    links = {  # where an attacker would point a link at a root-only file
        "logs/second.log": "second's output would be appended to it",
        f"status/.second.json.{server.proc.pid}.tmp": "the manager's temp status would truncate it",
        "status/ghost.json": "a forged status",
        "status/ghost.lock": "a lock file to hold",
        "rejected/x.json.error.json": "a rejection reason would be written to it",
        "manager.lock": "an older manager would open it",
        "events.1.jsonl": "a rotated event log",
        "planted": "anything",
    }
    for name, why in links.items():
        tried = as_user(ALICE, 'ln -s "$1" "$2"', victim, spool / name)
        assert tried.returncode != 0 and not os.path.lexists(spool / name), f"alice planted {name} ({why})"
    for folder in ("", "status", "logs", "rejected"):
        path = spool / folder / "alice-was-here"
        tried = as_user(ALICE, ': > "$1"', path)
        assert tried.returncode != 0 and not os.path.lexists(path), f"alice created a file in {folder or 'the root'}/"
    for name in ("events.jsonl", "status/first.json", "logs/first.log"):  # replacing what exists
        before = os.lstat(spool / name)
        tried = as_user(ALICE, 'rm -f "$2" || true; ln -sf "$1" "$2"', victim, spool / name)
        after = os.lstat(spool / name)
        assert tried.returncode != 0 and stat.S_ISREG(after.st_mode) and after.st_ino == before.st_ino, \
            f"alice replaced {name}"

    submit_as(ALICE, spool, say("second", ATTACK_LINE))
    wait_until(lambda: state_of(spool, "second") in FINAL, 30, "the second job to end")
    assert untouched(victim)


def test_links_left_in_a_shared_spool_are_not_followed(
        uids: Uids, place: Path, managers: Callable[..., Server]) -> None:
    """An older layout let members plant links in status/, logs/ and the spool's root;
    links left there (planted here by root) must never be written through."""
    spool = place / "spool"
    managers(spool, "--group", GROUP).stop()  # the spool, made by pool itself
    victims = {name: root_only(place, name.replace("/", "_")) for name in ("manager.lock", "events.jsonl")}
    for name, victim in victims.items():
        (spool / name).unlink(missing_ok=True)
        os.symlink(victim, spool / name)
    server = managers(spool, "--group", GROUP)
    assert server.proc is not None
    victims["logs/linked.log"] = root_only(place, "log")
    os.symlink(victims["logs/linked.log"], spool / "logs" / "linked.log")
    for pid in process_tree(server.proc.pid):  # the temp names an older pool wrote statuses through
        name = f"status/.linked.json.{pid}.tmp"
        victims[name] = root_only(place, f"temp-{pid}")
        os.symlink(victims[name], spool / name)

    submit_as(ALICE, spool, say("linked", ATTACK_LINE))
    wait_until(lambda: state_of(spool, "linked") in FINAL, 30, "the linked job to end")
    changed = {name: victim.read_bytes()[:80] for name, victim in victims.items() if not untouched(victim)}
    assert changed == {}, "root wrote through links left in the spool"
    assert stat.S_ISREG(os.lstat(spool / "status" / "linked.json").st_mode)


# ---------------------------------------------------------------- 3. who may kill whose job
def test_a_member_may_kill_her_own_job_and_not_another_members(
        uids: Uids, place: Path, managers: Callable[..., Server]) -> None:
    """Found by attack: kill requests are carried out for the job's submitter (and the
    spool's owner), never for another member; and no member can forge a job to kill."""
    spool = place / "spool"
    managers(spool, "--group", GROUP)
    submit_as(ALICE, spool, {"id": "long", "task": "promise_users_tasks:hold", "args": [str(place / "gate")]})
    wait_until(lambda: state_of(spool, "long") == "running", 30, "alice's long job running")
    doc = status_doc(spool, "long")
    assert doc is not None

    request = spool / "requests" / "kill-long"
    request_as(BOB, spool, "kill-long")
    wait_until(lambda: not os.path.lexists(request), 30, "bob's kill request dropped")
    assert state_of(spool, "long") == "running", "bob, another member, cancelled alice's job"
    assert pid_alive(doc["pid"]), "alice's job process is gone after bob's request"

    request_as(ALICE, spool, "kill-long")
    wait_until(lambda: state_of(spool, "long") in FINAL, 30, "alice's job to end on her request")
    assert state_of(spool, "long") == "cancelled"
    wait_until(lambda: not os.path.lexists(request), 30, "alice's kill request done")

    # A forged `running` status (of any root process, to have it killed) needs status/.
    forged = orjson.dumps({**doc, "id": "ghost", "pid": 1}).decode()
    for script in ('printf "%s" "$2" > "$1/ghost.json"', 'printf "%s" "$2" > "$1/.g" && mv "$1/.g" "$1/ghost.json"',
                   'flock "$1/ghost.lock" true'):
        tried = as_user(ALICE, script, spool / "status", forged)
        assert tried.returncode != 0, f"alice wrote into status/ with: {script}"
    assert not any(name.startswith(("ghost", ".g")) for name in os.listdir(spool / "status"))


def test_a_member_cannot_turn_another_members_request_on_a_job_of_her_choice(
        uids: Uids, place: Path, managers: Callable[..., Server]) -> None:
    """A request acts with the rights of its file's owner, and stays in requests/ while
    its job is stopping (or has not arrived yet): if bob may rename alice's request
    there, he points her rights at any job of hers (and a root's request at any job)."""
    spool = place / "spool"
    managers(spool, "--group", GROUP, "--workers", "2", "--kill-grace", "30")
    gates = place / "gates"  # where her jobs, which run as her, may write
    gates.mkdir(mode=0o1777)
    os.chmod(gates, 0o1777)
    gate = gates / "gate"
    for job_id, task in (("long", "hold"), ("stubborn", "stubborn")):
        submit_as(ALICE, spool, {"id": job_id, "task": f"promise_users_tasks:{task}", "args": [str(gate)]})
    wait_until(lambda: state_of(spool, "long") == state_of(spool, "stubborn") == "running", 30, "both jobs running")
    # its code has begun (it runs in a process of its own, as her)
    wait_until(lambda: "putting off SIGTERM" in log_text(spool, "stubborn"), 30, "stubborn ready to shrug off SIGTERM")
    request_as(ALICE, spool, "kill-stubborn")
    wait_until(Path(f"{gate}.term").exists, 30, "stubborn to get (and shrug off) its SIGTERM")
    assert os.lstat(spool / "requests" / "kill-stubborn").st_uid == uids.alice  # kept until stubborn ends

    moved = as_user(BOB, 'mv "$1/kill-stubborn" "$1/kill-long"', spool / "requests")
    if moved.returncode == 0:  # the manager now finds a kill of `long` in alice's file: let it act
        wait_until(lambda: not os.path.lexists(spool / "requests" / "kill-long")
                   or state_of(spool, "long") in FINAL, 30, "the renamed request to be carried out")
    assert state_of(spool, "long") == "running", \
        f"bob renamed alice's requests/kill-stubborn to kill-long (mv exit {moved.returncode}), and her job " \
        f"long, which she never asked to stop, ended {state_of(spool, 'long')}"
    assert moved.returncode != 0, "bob could rename alice's request in requests/"
    gate.touch()  # her jobs end


# ---------------------------------------------------------------- 4. a private spool
def test_another_users_file_in_a_private_spool_is_rejected_naming_its_owner(
        uids: Uids, place: Path, managers: Callable[..., Server]) -> None:
    spool = place / "spool"
    managers(spool)
    outbox = place / "outbox"
    outbox.mkdir()
    os.chown(outbox, uids.alice, -1)
    job = say("from-alice", "alice in a private spool")
    wrote = as_user(ALICE, 'printf "%s" "$2" > "$1/from-alice.json"', outbox, orjson.dumps(job).decode())
    assert wrote.returncode == 0, wrote.stderr
    os.rename(outbox / "from-alice.json", spool / "incoming" / "from-alice.json")  # root moves it in: still hers

    error, kept = spool / "rejected" / "from-alice.json.error.json", spool / "rejected" / "from-alice.json"
    # Why is written first, then her file is moved beside it: both are awaited.
    wait_until(lambda: error.exists() and kept.exists(), 30, "alice's file rejected")
    reason = orjson.loads(error.read_bytes())["reason"]
    assert f"owned by uid {uids.alice}" in reason, reason
    assert kept.read_bytes() == orjson.dumps(job) and os.lstat(kept).st_uid == uids.alice  # untouched
    assert state_of(spool, "from-alice") is None
    assert not os.path.lexists(spool / "logs" / "from-alice.log")


# ---------------------------------------------------------------- members told the truth
def test_a_member_can_read_why_her_job_was_refused(uids: Uids, place: Path, managers: Callable[..., Server]) -> None:
    """rejected/<file>.error.json was 0600: a member's `pool submit` of a refused job said
    `no job 'X'` and `pool status --state rejected` showed 0, while the refused file itself
    stayed readable to the group. The reason is readable by whoever could read the file."""
    spool = place / "spool"
    managers(spool, "--group", GROUP)
    submit_as(ALICE, spool, {"id": "nope", "task": "promise_users_tasks:no_such_task"})
    reason = spool / "rejected" / "nope.json.error.json"
    wait_until(reason.exists, 15, "the job refused")
    for member in (ALICE, BOB):  # her file was readable by the group: so is why it was refused
        read = as_user(member, 'cat "$1"', reason)
        assert read.returncode == 0 and "no_such_task" in orjson.loads(read.stdout)["reason"], read.stderr
    assert as_user(MALLORY, 'cat "$1"', reason).returncode != 0


def seen_by(uid: int, spool: Path) -> dict[str, Any]:
    """What pool's client tells the user ``uid`` of the spool: a process of the test,
    spawned as root, that becomes that user (with the shared group) before it looks. (The
    test's Python cannot be run by another user: it is in root's home.)"""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as workers:
        return workers.apply(_seen_by, (uid, str(spool)))  # type: ignore[no-any-return]


def _seen_by(uid: int, spool: str) -> dict[str, Any]:
    from pool.cli.views import orphaned
    from pool.client import Spool

    os.setgroups([grp.getgrnam(GROUP).gr_gid])
    os.setgid(pwd.getpwuid(uid).pw_gid)
    os.setuid(uid)
    seen = Spool(spool)
    statuses = seen.statuses()
    return {"orphaned": sorted(orphaned(seen, statuses)), "states": {s.id: s.state.value for s in statuses},
            "manager_running": seen.dir.manager_running(), "events": len(seen.events())}


def test_a_member_is_never_told_a_running_job_is_orphaned_when_she_cannot_know(
        uids: Uids, place: Path, managers: Callable[..., Server]) -> None:
    """status/<id>.lock is the spool owner's alone, so a member's look at it failed and
    read "not held": with no manager serving, her own running job read "no process runs
    it; the next manager runs it again" while its worker ran on. Where she cannot know,
    she is not told; the spool's owner still is."""
    spool = place / "spool"
    server = managers(spool, "--group", GROUP)
    submit_as(ALICE, spool, {"id": "hers", "task": "promise_users_tasks:hold", "args": [str(place / "gate")]})
    wait_until(lambda: state_of(spool, "hers") == "running", 15, "her job running")
    assert server.proc is not None
    server.proc.kill()  # the manager alone dies: its worker runs on, holding the job
    server.proc.wait()
    assert seen_by(uids.alice, spool)["orphaned"] == []
    assert seen_by(0, spool)["orphaned"] == []  # the owner looks at the lock: held


# ---------------------------------------------------------------- no member stops a manager
def test_a_member_cannot_hold_the_one_manager_guard(uids: Uids, place: Path, managers: Callable[..., Server]) -> None:
    """The guard is a lock on the spool folder, and flock needs only a read descriptor:
    `alice$ flock -s S sleep 1e9` held it after the manager stopped, and no manager could
    start again (under systemd, a restart loop). A shared spool's top is one a member
    passes through, not one she opens: she cannot lock it, and reads the spool all the same."""
    spool = place / "spool"
    managers(spool, "--group", GROUP).stop()  # the spool, made by pool itself
    holder = subprocess.Popen(["runuser", "-u", ALICE, "--", "flock", "-s", str(spool), "sleep", "600"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd="/")
    try:
        _, said = holder.communicate(timeout=20)  # held, it would sleep on
        assert holder.returncode != 0 and "Permission denied" in said, said
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    managers(spool, "--group", GROUP)
    submit_as(ALICE, spool, say("after", "still served"))
    wait_until(lambda: state_of(spool, "after") == "done", 15, "her job done")
    seen = seen_by(uids.alice, spool)
    assert seen["manager_running"] and seen["states"] == {"after": "done"} and seen["events"] >= 3
    assert as_user(ALICE, 'cat "$1/manager.json" "$1/status/after.json"', spool).returncode == 0


# ---------------------------------------------------------------- a member's job runs as her
def test_a_members_job_runs_as_her_when_root_serves(uids: Uids, place: Path, managers: Callable[..., Server]) -> None:
    """With --allow-commands, a member's command ran as the manager's user, root, with her
    HOME and any cwd she named, even a folder she cannot enter herself. Served by root,
    each job runs as the user who submitted it (uid, groups, HOME), as at and cron do;
    root's own files still run as root."""
    spool = place / "spool"
    managers(spool, "--group", GROUP, "--allow-commands")
    private = root_only(place, "secret").parent  # a folder only root may enter
    submit_as(ALICE, spool, {"id": "who", "command": ["sh", "-c", "id -u; id -G"]})
    submit_as(ALICE, spool, {"id": "task", "task": "promise_users_tasks:whoami"})
    submit_as(ALICE, spool, {"id": "peek", "command": ["ls"], "cwd": str(private)})
    drop(spool, "mine.json", {"id": "mine", "command": ["id", "-u"]})  # root's own file
    wait_until(lambda: all(state_of(spool, j) in FINAL for j in ("who", "task", "peek", "mine")), 30, "all ended")
    member = pwd.getpwuid(uids.alice)
    log = (spool / "logs" / "who.log").read_text()
    assert len(log.splitlines()) == 2, log
    uid_line, groups_line = log.splitlines()
    assert int(uid_line) == uids.alice and grp.getgrnam(GROUP).gr_gid in map(int, groups_line.split())
    assert 0 not in map(int, groups_line.split())
    seen = status_doc(spool, "task")["result"]  # type: ignore[index]
    assert (seen["uid"], seen["euid"], seen["gid"], seen["user"], seen["home"]) == (
        uids.alice, uids.alice, member.pw_gid, ALICE, member.pw_dir)
    peek = status_doc(spool, "peek")
    assert peek is not None and peek["state"] == "failed" and "cannot be entered" in peek["error"]["message"]
    assert "secret" not in log_text(spool, "peek")
    assert (spool / "logs" / "mine.log").read_text() == "0\n"


def test_a_members_checkpoint_is_hers_and_her_next_attempt_resumes_it(
        uids: Uids, place: Path, managers: Callable[..., Server]) -> None:
    """Served by root, her job runs as her, and may not make a folder in checkpoints/
    (root's): the worker makes her job's folder hers. What she saves, a task through
    pool.checkpoint or a command through $POOL_CHECKPOINT, is hers alone (0700): another
    member cannot read it."""
    spool = place / "spool"
    managers(spool, "--group", GROUP, "--allow-commands")
    submit_as(ALICE, spool, {"id": "t", "task": "promise_users_tasks:resumes", "retries": 1, "retry_delay": 0})
    save = ('cat "$POOL_CHECKPOINT" 2>/dev/null; id -u > "$POOL_CHECKPOINT.tmp" && '
            'mv "$POOL_CHECKPOINT.tmp" "$POOL_CHECKPOINT"; exit 1')
    submit_as(ALICE, spool, {"id": "c", "command": ["sh", "-c", save], "retries": 1, "retry_delay": 0})
    wait_until(lambda: state_of(spool, "t") == "done" and state_of(spool, "c") == "failed", 30, "both ended")
    assert status_doc(spool, "t")["result"] == [uids.alice, uids.alice]  # type: ignore[index]
    assert str(uids.alice) in log_text(spool, "c").splitlines()  # its second attempt read what the first saved
    saved = spool / "checkpoints" / "c" / "state"
    assert (os.stat(saved.parent).st_uid, os.stat(saved).st_uid) == (uids.alice, uids.alice)
    assert os.stat(saved.parent).st_mode & 0o777 == 0o700
    peek = as_user(BOB, 'cat "$1"', saved)
    assert peek.returncode != 0 and "Permission denied" in peek.stderr
    assert not (spool / "checkpoints" / "t").exists()  # done: its checkpoint went with its success


def test_what_a_members_job_leaves_running_ends_with_it_and_her_attempt_stays_hers(
        uids: Uids, place: Path, managers: Callable[..., Server]) -> None:
    """Her attempt runs in a process of hers inside root's worker's process group. What her
    job left running is ended when it ends; her process once tried to end the rest of the
    group itself, root's worker too, and failing that (as she may not), broke the attempt."""
    spool = place / "spool"
    managers(spool, "--group", GROUP)
    pid_file = place / "left.pid"
    os.chmod(place, 0o777)  # she writes the pid file there
    submit_as(ALICE, spool, {"id": "l", "task": "promise_users_tasks:leaves_a_child", "args": [str(pid_file)]})
    wait_until(lambda: state_of(spool, "l") in FINAL, 30, "ended")
    doc = status_doc(spool, "l") or {}
    assert (doc["state"], doc["result"]) == ("done", "left it"), doc
    left = int(pid_file.read_text())
    wait_until(lambda: not pid_alive(left), 30, "what it left running ended")


def test_a_members_own_completion_hook_runs_as_her_when_root_serves(
        uids: Uids, place: Path, managers: Callable[..., Server]) -> None:
    """A job's "on_finish" is a command of its submitter's: served by root, a member's
    runs as her (uid, groups), never as root; root's own job's runs as root."""
    spool = place / "spool"
    managers(spool, "--group", GROUP, "--allow-commands")
    hook = ["sh", "-c", "id -u; id -G"]
    submit_as(ALICE, spool, {**say("hers", "hi"), "on_finish": hook})
    drop(spool, "roots.json", {**say("roots", "hi"), "on_finish": hook})
    wait_until(lambda: all((spool / "status" / f"{j}.hook").exists() for j in ("hers", "roots")), 30, "both hooks ran")
    uid_line, groups_line = (spool / "logs" / "hers.hook.log").read_text().splitlines()
    assert int(uid_line) == uids.alice and 0 not in map(int, groups_line.split())
    assert (spool / "logs" / "roots.hook.log").read_text().splitlines()[0] == "0"


def test_a_members_job_runs_as_root_only_when_root_says_so(
        uids: Uids, place: Path, managers: Callable[..., Server]) -> None:
    spool = place / "spool"
    managers(spool, "--group", GROUP, "--allow-commands", "--members-as-root")
    submit_as(ALICE, spool, {"id": "who", "command": ["id", "-u"]})
    wait_until(lambda: state_of(spool, "who") in FINAL, 30, "her job ended")
    assert (spool / "logs" / "who.log").read_text() == "0\n"


# ---------------------------------------------------------------- a member's environment is hers
def submit_privately_as(user: str, spool: Path, job: dict[str, Any]) -> None:
    """As ``submit_as``, but the file is hers alone (0600), as pool's client writes a
    member's job file in a spool served by root."""
    name = job["id"]
    done = as_user(user, 'umask 077 && printf "%s" "$2" > "$1/.$3.tmp" && mv "$1/.$3.tmp" "$1/$3.json"',
                   spool / "incoming", orjson.dumps(job).decode(), name)
    assert done.returncode == 0, f"{user} could not submit {name}: {done.stderr}"


def test_a_members_environment_is_read_by_her_and_the_manager_only(
        uids: Uids, place: Path, managers: Callable[..., Server]) -> None:
    """The submitter's whole environment (caller_env) was in her job file (0640), in
    status/<id>.json (0640), in rejected/ when refused and in `pool status --json`: bob read
    alice's AWS key. It is kept where only she and the manager read it, shown by name at
    most, and removed with the job."""
    spool = place / "spool"
    managers(spool, "--group", GROUP, "--allow-commands")
    secret = "AKIA-ALICE-0123"
    check = 'test "$SECRET_KEY" = AKIA-ALICE-0123 && echo has-it'
    submit_privately_as(ALICE, spool, {"id": "env", "command": ["sh", "-c", check],
                                       "caller_env": {"SECRET_KEY": secret, "PATH": "/usr/bin:/bin"}})
    submit_privately_as(ALICE, spool, {"id": "bad", "command": ["true"], "caller_env": {"SECRET_KEY": secret},
                                       "retries": -1})
    refused(spool, "bad.json", also=lambda: state_of(spool, "env") in FINAL)  # and her job ended
    assert (spool / "logs" / "env.log").read_text() == "has-it\n"  # the job had its environment
    assert '"SECRET_KEY"' in (spool / "status" / "env.json").read_text()  # named, not shown
    assert as_user(BOB, 'grep -rqs "$2" "$1"', spool, secret).returncode != 0  # nowhere he can read (-q: 0 if found)
    assert as_user(BOB, 'cat "$1/status/env.json"', spool).returncode == 0  # what he may read, he still does
    assert as_user(ALICE, 'cat "$1/rejected/bad.json.error.json"', spool).returncode == 0  # why hers was refused
    kept = spool / "status" / "env.env"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and kept.stat().st_uid == 0
    removed = subprocess.run([*POOL, "--spool", str(spool), "remove", "env"], capture_output=True, text=True,
                             env=env_for_tests(), timeout=60)
    assert removed.returncode == 0, removed.stderr
    assert not kept.exists()  # removed with the job


def test_a_members_job_file_is_hers_alone_in_a_spool_served_by_root(
        uids: Uids, place: Path, managers: Callable[..., Server]) -> None:
    spool = place / "spool"
    managers(spool, "--group", GROUP).stop()  # made by root, served by nobody now
    job_id = submitted_by_client(uids.alice, spool)
    job_file = spool / "incoming" / f"{job_id}.json"
    assert stat.S_IMODE(job_file.stat().st_mode) == 0o600 and job_file.stat().st_uid == uids.alice
    assert as_user(BOB, 'cat "$1"', job_file).returncode != 0


def submitted_by_client(uid: int, spool: Path) -> str:
    """The id of a command job the user ``uid`` submits through pool's client (see seen_by)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as workers:
        return workers.apply(_submitted_by_client, (uid, str(spool)))  # type: ignore[no-any-return]


def _submitted_by_client(uid: int, spool: str) -> str:
    from pool.client import Spool

    os.setgroups([grp.getgrnam(GROUP).gr_gid])
    os.setgid(pwd.getpwuid(uid).pw_gid)
    os.setuid(uid)
    os.environ["SECRET_KEY"] = "AKIA-ALICE-0123"
    return Spool(spool).submit_command(["true"]).id


# ---------------------------------------------------------------- refusals that say what to do
def test_one_who_may_not_write_is_told_which_folder_whose_and_what_to_do(
        uids: Uids, place: Path, managers: Callable[..., Server]) -> None:
    """Permission errors named temp files (`Error: .9269bc3eb433.json.13078.e520bac6.tmp:
    Permission denied`, `Error: e81e7ac2d1bb.inline: Permission denied`): they say which
    folder, whose it is, and what to do."""
    spool = place / "spool"
    managers(spool, "--group", GROUP).stop()
    (place / "gates").mkdir(mode=0o777)
    os.chmod(place / "gates", 0o1777)
    said = {user: submitted_as(uid, spool) for user, uid in ((MALLORY, uids.mallory), (ALICE, uids.alice))}
    assert said[MALLORY].startswith(f"NotAllowed: you may not enter {spool} (owned by root, group {GROUP}")
    assert f"ask root to add you to group {GROUP}" in said[MALLORY] and ".tmp" not in said[MALLORY]
    # alice may submit, but not run a job herself in a spool served by root: status/ is root's alone
    assert said[ALICE].startswith(f"NotAllowed: you may not write in {spool}/status"), said[ALICE]
    assert ".inline" not in said[ALICE]


def submitted_as(uid: int, spool: Path) -> str:
    """What pool's client says when the user ``uid`` runs a job there with `fallback="inline"`."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as workers:
        return workers.apply(_submitted_as, (uid, str(spool)))  # type: ignore[no-any-return]


def _submitted_as(uid: int, spool: str) -> str:
    import pool.inline  # noqa: F401  (imported while root: this Python's own files are in root's home)
    from pool.client import Spool

    entry = pwd.getpwuid(uid)
    os.setgroups(os.getgrouplist(entry.pw_name, entry.pw_gid))
    os.setgid(entry.pw_gid)
    os.setuid(uid)
    try:
        Spool(spool).submit_command(["true"], fallback="inline")
    except Exception as exc:  # what the command line would print, one line
        return f"{type(exc).__name__}: {exc}"
    return "submitted"
