"""A lock per worker, and a job's own lock for its other writers (pool/locks.py): who has
a job, whether its attempt began, and that a status is never written by two at once."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

from conftest import TESTS, env_for_tests

from pool.locks import WorkerLock
from pool.model import utc_now
from pool.spool import SpoolDir

QUEUED_SINCE = "2026-01-01T00:00:00.000000Z"


def spool_with_job(root: Path, job_id: str = "j") -> SpoolDir:
    spool = SpoolDir(root)
    spool.create()
    (root / "status" / f"{job_id}.json").write_text("{}")  # a status: the job exists
    return spool


def test_a_worker_has_a_job_from_its_claim_and_it_counts_once_begun(tmp_path: Path) -> None:
    spool = spool_with_job(tmp_path / "spool")
    locks = spool.locks
    worker = locks.worker_lock(os.getpid(), 1)
    lease = worker.claim("j", 1, QUEUED_SINCE, 0.0)
    assert lease is not None and locks.is_leased("j") and locks.leased_ids() == {"j"}
    assert locks.began("j", 1) is None  # claimed, not begun: it may still be skipped
    worker.begin()
    assert locks.began("j", 1, QUEUED_SINCE) == (os.getpid(), 1)
    assert locks.began("j", 1, "2026-01-01T00:00:01.000000Z") is None  # another time queued: another attempt
    assert locks.began("j", 2) is None
    lease.release()
    assert not locks.is_leased("j")
    assert locks.began("j", 1) == (os.getpid(), 1)  # the marker outlives the attempt
    assert not (tmp_path / "spool" / "status" / "j.lock").exists()  # no file of its own for the worker's run
    assert locks.lease("j") is not None  # free for another writer now


def test_a_claim_given_up_says_the_attempt_never_began(tmp_path: Path) -> None:
    spool = spool_with_job(tmp_path / "spool")
    worker = spool.locks.worker_lock(os.getpid(), 1)
    assert worker.claim("j", 1, QUEUED_SINCE, 0.0) is not None
    worker.unclaim()
    assert not spool.locks.is_leased("j") and spool.locks.began("j", 1) is None


def test_a_writer_and_a_worker_never_have_the_job_at_once(tmp_path: Path) -> None:
    spool = spool_with_job(tmp_path / "spool")
    locks = spool.locks
    worker = locks.worker_lock(os.getpid(), 1)
    writer = locks.lease("j")
    assert writer is not None  # the job's own lock, made the first time a writer needs it
    assert worker.claim("j", 1, QUEUED_SINCE, 0.05) is None  # the writer holds it: the worker lets it be
    assert not locks.worker_has("j") and locks.began("j", 1) is None
    writer.release()
    lease = worker.claim("j", 1, QUEUED_SINCE, 0.0)
    assert lease is not None
    assert locks.lease("j") is None  # the worker has it now
    lease.release()
    assert locks.lease("j") is not None


def test_two_workers_never_have_one_job(tmp_path: Path) -> None:
    spool = spool_with_job(tmp_path / "spool")
    first, second = spool.locks.worker_lock(os.getpid(), 1), spool.locks.worker_lock(os.getpid(), 2)
    lease = first.claim("j", 1, QUEUED_SINCE, 0.0)
    assert lease is not None
    assert second.claim("j", 1, QUEUED_SINCE, 0.0) is None
    lease.release()
    assert second.claim("j", 1, QUEUED_SINCE, 0.0) is not None


DIES_RUNNING = """
import os, sys
from pool.spool import SpoolDir
worker = SpoolDir(sys.argv[1]).locks.worker_lock(os.getpid(), 7)
worker.claim("j", 1, "2026-01-01T00:00:00.000000Z", 0.0)
worker.begin()
os._exit(0)  # dead, its attempt unfinished
"""


def test_a_dead_workers_marker_says_its_attempt_began_and_that_nothing_runs_it(tmp_path: Path) -> None:
    spool = spool_with_job(tmp_path / "spool")
    subprocess.run([sys.executable, "-c", DIES_RUNNING, str(tmp_path / "spool")], check=True, env=env_for_tests(),
                   cwd=TESTS, timeout=60)
    assert not spool.locks.is_leased("j")
    pid_and_start = spool.locks.began("j", 1)
    assert pid_and_start is not None and pid_and_start[1] == 7
    assert spool.locks.forget_dead_workers(keep=lambda marker: marker.job_id == "j") == 1
    assert spool.locks.began("j", 1) is not None  # still being seen to: kept
    assert spool.locks.forget_dead_workers(keep=lambda marker: False) == 0
    assert spool.locks.began("j", 1) is None and os.listdir(tmp_path / "spool" / "workers") == []


ROUNDS = 200


def take_turns(root: str, role: str, log: str) -> None:
    """Have the job ROUNDS times, as a worker or as a writer, saying in ``log`` when it
    has it and when it lets go (O_APPEND: each line lands whole)."""
    spool = SpoolDir(root)
    worker = spool.locks.worker_lock(os.getpid(), None) if role == "worker" else None
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    done = 0
    while done < ROUNDS:
        lease = worker.claim("j", 1, utc_now(), 0.0) if worker is not None else spool.locks.lease("j")
        if lease is None:
            continue
        os.write(fd, f"{role} in\n".encode())
        count = Path(root, "count")  # a read-modify-write, as a writer of a status does
        count.write_text(str(int(count.read_text()) + 1))
        os.write(fd, f"{role} out\n".encode())
        lease.release()
        done += 1
    os.close(fd)


def test_workers_and_writers_racing_for_one_job_never_overlap(tmp_path: Path) -> None:
    """Each side writes before it looks (the worker its marker, the writer its lock): of
    two that meet, one always sees the other."""
    spool_with_job(tmp_path / "spool")
    log = tmp_path / "turns"
    log.touch()
    (tmp_path / "spool" / "count").write_text("0")
    spawn = multiprocessing.get_context("spawn")
    racers = [spawn.Process(target=take_turns, args=(str(tmp_path / "spool"), role, str(log)))
              for role in ("worker", "worker", "writer", "writer")]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(120)
        assert racer.exitcode == 0
    assert (tmp_path / "spool" / "count").read_text() == str(ROUNDS * len(racers))  # no update lost
    lines = log.read_text().splitlines()
    assert len(lines) == 2 * ROUNDS * len(racers)
    for n in range(0, len(lines), 2):  # every "in" is followed by its own "out": nobody came between
        assert lines[n].endswith(" in") and lines[n + 1] == lines[n].replace(" in", " out"), lines[n:n + 2]


LOCKED_THE_OLD_WAY = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.pwrite(fd, b"1 2026-01-01T00:00:00.000000Z 4242 99".ljust(95) + b"\\n", 0)
print("held", flush=True)
sys.stdin.read()
"""


def test_a_job_run_by_a_worker_of_the_version_before_is_seen_as_run(tmp_path: Path) -> None:
    """Before 2026-12-06 a worker held the job's own lock for the whole run, its start
    marker in it: a manager detached from such a worker and upgraded must not run the
    job again, nor count its attempt as not begun."""
    spool = spool_with_job(tmp_path / "spool")
    old = subprocess.Popen([sys.executable, "-c", LOCKED_THE_OLD_WAY, str(tmp_path / "spool" / "status" / "j.lock")],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert old.stdout is not None and old.stdout.readline() == "held\n"
        assert spool.locks.is_leased("j") and spool.locks.began("j", 1, QUEUED_SINCE) == (4242, 99)
        assert spool.locks.worker_lock(os.getpid(), 1).claim("j", 1, QUEUED_SINCE, 0.05) is None
    finally:
        old.communicate("")
    assert not spool.locks.is_leased("j") and spool.locks.began("j", 1) == (4242, 99)


def test_a_worker_lock_file_goes_with_its_worker(tmp_path: Path) -> None:
    spool = spool_with_job(tmp_path / "spool")
    worker: WorkerLock = spool.locks.worker_lock(os.getpid(), 3)
    assert len(os.listdir(tmp_path / "spool" / "workers")) == 1
    worker.close()
    assert os.listdir(tmp_path / "spool" / "workers") == []


def test_a_spool_made_before_workers_existed_gets_the_folder_with_its_first_worker(tmp_path: Path) -> None:
    spool = spool_with_job(tmp_path / "spool")
    (tmp_path / "spool" / "workers").rmdir()
    spool.worker_locks.close()
    worker = spool.locks.worker_lock(os.getpid(), 9)
    assert worker.claim("j", 1, QUEUED_SINCE, 0.0) is not None
    assert (tmp_path / "spool" / "workers").stat().st_mode & 0o777 == 0o700
