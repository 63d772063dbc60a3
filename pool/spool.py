"""The spool directory: its layout and permissions, job statuses, their locks, and the
one-manager guard. (incoming/ and rejected/ are pool/dropzone.py's, requests/ is
pool/requests.py's, events.jsonl is pool/events.py's; every file is opened the way
pool/safeio.py says.)

    spool/
      incoming/          drop zone (*.json, *.jsonl); dot-files, *.tmp and *.part are ignored
        .claimed~<token>~<name>   a file taken by rename, until its jobs have statuses
      status/<id>.json   the live status of one job, replaced atomically; <id>.lock beside it
                         (the job's own lock, for writers other than its worker: made
                         the first time one needs it),
                         <id>.env (its submitter's environment: 0600),
                         <id>.inline (held by an inline manager), <id>.paused (how long
                         its attempt was paused: pool/pauses.py) and <id>.hook (its
                         completion hook ran: pool/hooks.py)
      logs/<id>.log      what the job printed (logs/.out-<pid>, its worker's scratch file,
                         until it prints: pool/worker.py)
      rejected/<file>    a refused input, untouched, with <file>.error.json saying why
      requests/          kill and retry requests for the manager (<kind>-<id>)
      schedules/         NAME.json, a schedule its owner wrote, and NAME.state, the
                         manager's record of its firings (pool/schedules.py)
      groups/            NAME.json, a group's limit, its owner's (pool/groups.py)
      checkpoints/<id>/state   what a job saved for its next attempt (pool/checkpoints.py)
      workers/<pid>-<start>.lock   a worker's lock and the start marker of its attempt
                         (pool/locks.py): the manager's user's alone
      events.jsonl       one line per state change
      manager.pid        the serving manager's pid (the guard itself is a lock on spool/)
      manager.json       its pid and the kill grace it gives a job: 0644, nothing secret

Every document is written to a temp file in the same folder and then renamed, so a
reader never needs a lock and never sees a partial document. Writers of a status take
its lock (flock on status/<id>.lock, see pool/locks.py) so two of them never interleave a
read-modify-write; a job's worker has it for the job's whole run through its own lock
and marker in workers/.

A private spool is 0700. A shared one (``pool serve --group G``) is 2710 (members pass
through it but cannot open it, and so cannot hold the one-manager guard, a lock on it),
with status/, logs/ and rejected/ 2750 and incoming/ and requests/ 3770: members drop
jobs and requests and read statuses and logs; only the
manager's user writes status/, logs/, rejected/, the locks and events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from .checkpoints import CHECKPOINTS, CheckpointBook
from .dropzone import DropZone
from .errors import CorruptStatus, JobNotFound, ManagerRunning, SpoolError
from .events import EventLog
from .groups import GroupBook
from .locks import WORKERS, JobLocks, flock_within, is_held
from .model import ID_PATTERN, AttachedEnv, JobStatus, KeptEnv, encode_json
from .pauses import Pauses, parse_pauses
from .procs import is_running, process_start_time
from .queuedbook import Listed, QueuedBook, record_of
from .requests import RequestBox
from .safeio import Folder, Owners, UnsafeFile, not_allowed, write_all
from .schedules import ScheduleBook

log = logging.getLogger(__name__)

DIRS = ("incoming", "status", "logs", "rejected", "requests", "schedules", "groups", CHECKPOINTS, WORKERS)
# Shared: setgid, so what is made inside belongs to the group; the drop folders are also
# sticky (like /tmp), so a member cannot rename or delete another member's files there
# (a renamed request would otherwise act with its first author's rights).
SHARED_MODES = {"": 0o2710, "incoming": 0o3770, "requests": 0o3770, "status": 0o2750, "logs": 0o2750,
                "rejected": 0o2750, "schedules": 0o2750, "groups": 0o2750,
                CHECKPOINTS: 0o2710, WORKERS: 0o2700}
GUARD_PATIENCE = 0.3  # a client asking whether a manager runs holds the guard for microseconds


SCRATCH_PREFIX = ".out-"  # logs/.out-<pid>: a worker's scratch file between attempts (pool/worker.py)


def scratch_log(pid: int) -> str:
    """The output file of worker ``pid`` (logs/.out-<pid>), made once and handed from one
    of its jobs to the next until one prints: then it is renamed <id>.log (pool/worker.py,
    JobOutput)."""
    return f"{SCRATCH_PREFIX}{pid}"


def open_folder(path: str | os.PathLike[str], dir_fd: int | None = None,
                shown: os.PathLike[str] | str | None = None) -> int:
    """A folder of the spool, opened without following a link. Raises SpoolError."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise SpoolError(f"{shown or path} is not a directory (a symlink or a file): move it away") from None
        raise


def check_folder(fd: int, path: Path, me: int, group_gid: int | None) -> None:
    """Whoever can write into the spool can run code as us, or make us write through their
    links: a folder must be ours, not writable by others, and writable by its group only in
    a shared spool (the manager then sets the modes). Raises SpoolError."""
    st = os.fstat(fd)
    if st.st_uid != me:
        raise SpoolError(f"{path} is owned by uid {st.st_uid}, not by this user (uid {me}), who could then "
                         f"replace what pool writes there; serve it as its owner, or: chown {me} {path}")
    if st.st_mode & stat.S_IWOTH:
        raise SpoolError(f"{path} is writable by every user (mode {stat.S_IMODE(st.st_mode):o}), so anyone "
                         f"could run code as this user; run: chmod o-w {path}")
    if st.st_mode & stat.S_IWGRP and group_gid is None:
        raise SpoolError(f"{path} is writable by its group (gid {st.st_gid}); run chmod g-w {path}, "
                         "or serve with --group naming that group")


def check_parents(root: Path) -> None:
    """Whoever may rename entries in a folder above the spool can swap the spool for one of
    their own: every folder above it must be root's or ours, and writable by others only if
    sticky (as /tmp is), as OpenSSH's StrictModes asks of a home directory."""
    me = os.geteuid()
    for parent in root.resolve().parents:
        st = os.stat(parent)
        if st.st_uid not in (0, me):
            raise SpoolError(f"{parent} (a folder above the spool) is owned by uid {st.st_uid}, who could swap the "
                             "spool for another; keep the spool in a folder of yours or root's")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            raise SpoolError(f"{parent} (a folder above the spool) is writable by others (mode "
                             f"{stat.S_IMODE(st.st_mode):o}) without the sticky bit: they could swap the spool")


@dataclasses.dataclass(frozen=True)
class Serving:
    """What a serving manager says of itself in manager.json: the kill grace it gives a
    job when a kill request names none (`pool kill` waits that long, and says so), the
    grace it gives running jobs when it stops (`pool stop` says so), how many workers it
    runs (`pool workers`), what keeps it from running jobs (`pool status` says it), and
    how it is stopping, once it is."""

    kill_grace: float | None = None
    grace: float | None = None
    workers: int | None = None
    trouble: str | None = None
    stopping: str | None = None
    # What it runs (a client refuses at submit what it would refuse at intake): the
    # modules whose @pool.task functions it runs, and whether it runs any importable
    # function (an Executor's private manager: pool/private.py).
    task_modules: tuple[str, ...] | None = None
    any_task: bool | None = None
    durable: bool | None = None  # pool serve --durable: a client's job file is on disk before submit returns
    # The machines its attempts run on (--engine celery: each `pool worker`, its slots and
    # jobs running), for `pool workers`; None when they run on this one.
    hosts: list[dict[str, Any]] | None = None


SERVING_TYPES: dict[str, type | tuple[type, ...]] = {
    "kill_grace": (int, float), "grace": (int, float), "workers": int, "trouble": str, "stopping": str,
    "task_modules": list, "any_task": bool, "durable": bool, "hosts": list}


def is_host(doc: object) -> bool:
    """A machine as manager.json lists it (``Serving.hosts``): checked as any file is."""
    return isinstance(doc, dict) and isinstance(doc.get("name"), str) and all(
        isinstance(doc.get(k), int) and not isinstance(doc.get(k), bool) for k in ("slots", "busy")) and isinstance(
        doc.get("tasks", []), list) and all(isinstance(m, str) for m in doc.get("tasks", []))


def decoded(job_id: str, data: bytes, where: str) -> JobStatus:
    """Job ``job_id``'s status from its document (read from ``where``). Raises CorruptStatus."""
    status = JobStatus.decode(data, where)
    if status.id != job_id:
        raise CorruptStatus(f"{where}: holds job {status.id!r}")
    return status


class SpoolDir:
    """Paths and file operations of one spool directory."""

    def __init__(self, root: str | os.PathLike[str], buffer_events: bool = False, durable: bool = False) -> None:
        """``durable``: pool serve --durable (see ``Folder.sync``): status documents reach
        the disk before they are acted on."""
        self.root = Path(root).absolute()
        self.incoming = self.root / "incoming"
        self.status_dir = self.root / "status"
        self.logs = self.root / "logs"
        self.rejected = self.root / "rejected"
        self.requests = self.root / "requests"
        self.top = Folder(self.root)
        self.statuses = Folder(self.status_dir, durable)
        self.log_folder = Folder(self.logs)
        self.schedules = ScheduleBook(Folder(self.root / "schedules"), lambda: self.owners, lambda: self.file_mode)
        self.groups = GroupBook(Folder(self.root / "groups"), lambda: self.owners, lambda: self.file_mode)
        self.drop = DropZone(self.incoming, self.rejected)
        self.box = RequestBox(self.requests)
        self.events = EventLog(self.top, lambda: self.file_mode, buffered=buffer_events)
        self.worker_locks = Folder(self.root / WORKERS, durable)
        self.locks = JobLocks(self.statuses, self.worker_locks, lambda: self.owners, self.has_status)
        self.checkpoints = CheckpointBook(Folder(self.root / CHECKPOINTS))
        self.queued = QueuedBook(self.statuses, lambda: self.owners, lambda: self.file_mode)
        self._owners: Owners | None = None
        self._file_mode: int | None = None

    def close(self) -> None:
        """Close the folders opened so far (each opens again when next used)."""
        for folder in (self.top, self.statuses, self.log_folder, self.schedules.folder, self.groups.folder,
                       self.drop.folder, self.drop.rejected, self.box.folder, self.checkpoints.folder,
                       self.worker_locks):
            folder.close()
        self.queued.close()

    # ------------------------------------------------------------ layout and permissions
    def create(self, group_gid: int | None = None, check: bool = False) -> None:
        """Create whatever is missing: private (0700), or shared with one group. With
        ``check`` (the manager), first make sure every folder is one only we control (see
        ``check_folder``), before anything is created in it; the folders stay open, so
        what is used afterwards is what was checked. Raises SpoolError."""
        me = os.geteuid()
        try:
            if check:
                check_parents(self.root)
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            root_fd = open_folder(self.root)
            folders = {"": root_fd}
            if check:
                check_folder(root_fd, self.root, me, group_gid)
            for name in DIRS:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o700, dir_fd=root_fd)
                folders[name] = open_folder(name, root_fd, self.root / name)
                if check:
                    check_folder(folders[name], self.root / name, me, group_gid)
        except SpoolError:
            raise
        except OSError as exc:
            raise SpoolError(f"cannot create spool {self.root}: {exc.strerror}") from None
        if group_gid is not None:
            for name, fd in folders.items():
                os.fchown(fd, -1, group_gid)
                os.fchmod(fd, SHARED_MODES[name])
        if check:
            for folder, name in ((self.top, ""), (self.statuses, "status"), (self.log_folder, "logs"),
                                 (self.drop.folder, "incoming"), (self.drop.rejected, "rejected"),
                                 (self.box.folder, "requests"), (self.schedules.folder, "schedules"),
                                 (self.groups.folder, "groups"), (self.checkpoints.folder, CHECKPOINTS),
                                 (self.worker_locks, WORKERS)):
                folder.use(folders.pop(name))
        for fd in folders.values():
            os.close(fd)

    def exists(self) -> bool:
        """Whether there is a spool here. Raises NotAllowed when there is one this user
        may not enter (its folder says whose it is)."""
        try:
            return self.status_dir.is_dir() or self._no_entry()
        except PermissionError:
            return self._no_entry()

    def _no_entry(self) -> bool:
        """False; but NotAllowed when a folder is here that this user may not enter."""
        if self.root.is_dir() and not os.access(self.root, os.X_OK):
            raise not_allowed(str(self.root), "enter")
        return False

    @property
    def owners(self) -> Owners:
        """Who may have written the spool's own files: its owner only."""
        if self._owners is None:
            self._owners = Owners(os.fstat(self.top.fd).st_uid)
        return self._owners

    def submitters(self, group_gid: int | None) -> Owners:
        """Who may own what is dropped into incoming/ and requests/: us, and the group."""
        return Owners(os.geteuid(), group_gid)

    @property
    def file_mode(self) -> int:
        """Statuses and logs of a shared spool are readable by its group."""
        if self._file_mode is None:
            shared = os.fstat(self.statuses.fd).st_mode & stat.S_IRGRP
            self._file_mode = 0o640 if shared else 0o600
        return self._file_mode

    def open_log(self, job_id: str) -> int:
        """The job's log for appending (never through a link planted there)."""
        return self.log_folder.open_append(f"{job_id}.log", self.owners, self.file_mode)

    def open_log_to_read(self, job_id: str) -> int:
        """The job's log for reading, opened as every spool file is (never through a link,
        never a FIFO, the spool owner's). A first attempt's output is under this name
        within a progress interval of its first print (pool/worker.py, JobOutput).
        Raises FileNotFoundError, UnsafeFile."""
        fd, _ = self.log_folder.open_checked(f"{job_id}.log", self.owners, max_bytes=1 << 62)
        return fd

    def bury_worker(self, pid: int, pid_started: int | None, job_id: str | None) -> None:
        """Worker ``pid`` is dead and how its last attempt ended is told: its scratch file
        goes, whose output, if any, is that of ``job_id``'s attempt, which it began and did
        not see through (it died before naming the output <id>.log), and becomes part of
        that job's log. Its lock file stays until its job's status says what became of
        that attempt (``JobLocks.forget_dead_workers``). Raises OSError."""
        name = scratch_log(pid)
        try:
            fd, st = self.log_folder.open_checked(name, self.owners, max_bytes=1 << 62)
        except (FileNotFoundError, UnsafeFile):
            return
        try:
            if st.st_size and job_id is not None:
                if not self.log_folder.has(f"{job_id}.log"):
                    os.rename(name, f"{job_id}.log", src_dir_fd=self.log_folder.fd, dst_dir_fd=self.log_folder.fd)
                    return
                self.append_to_log(job_id, fd, st.st_size)
            self.log_folder.unlink(name)
        finally:
            os.close(fd)

    def append_to_log(self, job_id: str, fd: int, size: int) -> None:
        """Append the first ``size`` bytes of ``fd`` to the job's log (output that could not
        be named <id>.log: a dead worker's, or a scratch file taken away). Raises OSError,
        UnsafeFile."""
        log_fd = self.open_log(job_id)
        try:
            write_all(log_fd, os.pread(fd, size, 0))
        finally:
            os.close(log_fd)

    # ------------------------------------------------------------ status documents
    def write_status(self, status: JobStatus) -> None:
        """Replace a status document whole; callers that may race hold its lock."""
        self.statuses.write_atomic(*self.status_file(status))

    def status_file(self, status: JobStatus) -> tuple[str, bytes, int]:
        """The status document's file in status/: (name, content, mode)."""
        return f"{status.id}.json", status.encode(), self.file_mode

    def read_status(self, job_id: str) -> JobStatus:
        """Raises JobNotFound when the job has no status document, CorruptStatus when it
        is not a document pool could have written."""
        return decoded(job_id, *self._document(job_id))

    def read_status_document(self, job_id: str) -> dict[str, Any]:
        """The job's status document as it is, parsed but not checked (a worker about to
        start a job it was handed reads only its state). Raises JobNotFound, CorruptStatus."""
        data, where = self._document(job_id)
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise CorruptStatus(f"{where} {exc}") from None
        if not isinstance(doc, dict):
            raise CorruptStatus(f"{where}: not a JSON object")
        return doc

    def _document(self, job_id: str) -> tuple[bytes, str]:
        """A job's status document and where it is: its file, or else its line in a
        record of queued jobs (pool/queuedbook.py). Raises JobNotFound, CorruptStatus."""
        name = f"{job_id}.json"
        for last in (False, True):
            try:
                return self.statuses.read(name, self.owners), f"status/{name}"
            except FileNotFoundError:
                if last:
                    break
            except UnsafeFile as exc:
                raise CorruptStatus(f"status/{name} {exc}") from None
            try:
                line = self.queued.find(job_id)
            except (OSError, UnsafeFile) as exc:
                raise CorruptStatus(f"status/{record_of(job_id)} {exc}") from None
            if line is not None:
                return line, f"status/{record_of(job_id)}"
            # No line: none ever, struck, or its record gone once every job of it had its
            # file, this one's written since we looked (looked at once more).
            if record_of(job_id) is None or self.queued.exists(job_id):
                break
        raise JobNotFound(f"no job {job_id!r} in {self.root}")

    def has_status(self, job_id: str) -> bool:
        if self.statuses.has(f"{job_id}.json"):
            return True
        try:
            return self.queued.find(job_id) is not None
        except (OSError, UnsafeFile):
            return False

    def status_ids(self) -> list[str]:
        """Every job's id: those with a status file, then those in a record alone."""
        with_file, in_record = self.listing()
        return with_file + list(in_record)

    def listing(self) -> tuple[list[str], dict[str, bytes]]:
        """The ids of the jobs with a status file, and the document of each job that is in
        a record alone (pool/queuedbook.py). The records are read first: a job leaves its
        record for a file, never the other way, so none is missed between."""
        return self._with_files(dict(self.queued.standing()))

    def brief_listing(self) -> tuple[list[str], list[Listed], dict[str, bytes]]:
        """As ``listing``, with the jobs in a record alone as their record's briefs line has
        them, where that line holds (and their documents where not)."""
        listed, documents = self.queued.listed()
        with_file, documents = self._with_files(documents)
        if with_file and listed:
            has_file = set(with_file)
            listed = [job for job in listed if job[0] not in has_file]
        return with_file, listed, documents

    def _with_files(self, in_record: dict[str, bytes]) -> tuple[list[str], dict[str, bytes]]:
        with_file = [n[:-5] for n in self.statuses.listdir()
                     if n.endswith(".json") and not n.startswith(".") and ID_PATTERN.match(n[:-5])]
        for job_id in with_file if in_record else ():
            in_record.pop(job_id, None)
        return with_file, in_record

    def iter_statuses(self, cache: dict[str, tuple[int, JobStatus]] | None = None) -> Iterator[JobStatus]:
        """Every readable status; one deleted or broken meanwhile is skipped. With a
        ``cache`` (kept by the caller between calls, as a live view does), a document is
        parsed again only when it changed: every write replaces a file, so a new inode or
        mtime means new content, and a stat costs far less than a parse (a job in a record
        alone: its line's hash)."""
        with_file, in_record = self.listing()
        for job_id in with_file:
            name = f"{job_id}.json"
            try:
                if cache is not None:
                    st = os.stat(name, dir_fd=self.statuses.fd, follow_symlinks=False)
                    stamp = st.st_ino ^ st.st_mtime_ns
                    known = cache.get(name)
                    if known is not None and known[0] == stamp:
                        yield known[1]
                        continue
                status = self.read_status(job_id)
            except (OSError, JobNotFound, CorruptStatus):
                continue
            if cache is not None:
                cache[name] = (stamp, status)
            yield status
        for job_id, data in in_record.items():
            stamp = hash(data)
            known = cache.get(job_id) if cache is not None else None
            if known is not None and known[0] == stamp:
                yield known[1]
                continue
            try:
                status = decoded(job_id, data, f"status/{record_of(job_id)}")
            except CorruptStatus:
                continue
            if cache is not None:
                cache[job_id] = (stamp, status)
            yield status

    # ------------------------------------------------------------ environments kept apart
    # A command job's environment, as its submitter had it (pool/model.py's caller_env),
    # may hold secrets: status/<id>.env, 0600, the manager's user's alone (a status
    # document, which the group of a shared spool reads, names the variables only).
    def keep_env(self, job_id: str, env: Mapping[str, str]) -> None:
        self.statuses.write_atomic(*self.env_file(job_id, env))

    @staticmethod
    def env_file(job_id: str, env: Mapping[str, str]) -> tuple[str, bytes, int]:
        """The file an environment is kept apart in: (name, content, mode)."""
        return f"{job_id}.env", encode_json(dict(env)), 0o600

    def attach_env(self, status: JobStatus) -> JobStatus:
        """``status`` with its environment's values, read back from where they are kept
        (as it is when they are not kept, or cannot be read: its attempt then fails,
        saying so, rather than run in another environment). Values a status document
        still held (written before they were kept apart) are kept apart now."""
        env = status.spec.caller_env
        if isinstance(env, Mapping) and not isinstance(env, AttachedEnv):
            self.keep_env(status.id, env)
            return dataclasses.replace(status, spec=dataclasses.replace(status.spec, caller_env=AttachedEnv(env)))
        if not isinstance(env, KeptEnv):
            return status
        try:
            values = orjson.loads(self.statuses.read(f"{status.id}.env", self.owners))
        except (OSError, UnsafeFile, ValueError):
            return status
        if not isinstance(values, dict):
            return status
        return dataclasses.replace(status, spec=dataclasses.replace(status.spec, caller_env=AttachedEnv(values)))

    # ------------------------------------------------------------ leaving the spool (pool.ledger's)
    def set_aside(self, job_id: str, why: str) -> None:
        """Move a status document that cannot be trusted to rejected/, with why (the
        caller, the ledger, holds the job's lock and records it)."""
        log.error("status/%s.json set aside: %s", job_id, why)
        name = f"{job_id}.json"
        if not self.statuses.has(name):  # its line in a record, then
            try:
                line = self.queued.find(job_id)
            except (OSError, UnsafeFile):  # the record cannot be read: it goes whole, its jobs with it
                record = record_of(job_id)
                if record is not None and self.statuses.has(record):
                    self.set_aside_record(record, why)
                return
            if line is None:
                return
            self.statuses.write_atomic(name, line, self.file_mode)  # set aside as its file would be
        self.queued.strike(job_id)
        self.drop.reject_from(self.statuses, f"{job_id}.json", f"{job_id}.status.json", why)
        self.statuses.unlink(f"{job_id}.env")  # its secrets go with it: the job will not run

    def set_aside_record(self, name: str, why: str) -> None:
        """Move a record of queued jobs that cannot be read to rejected/, with why."""
        log.error("status/%s set aside: %s", name, why)
        self.drop.reject_from(self.statuses, name, name, why)

    def read_pauses(self, job_id: str, attempt: int) -> Pauses | None:
        """How long attempt ``attempt`` of the job has been paused (None: never)."""
        try:
            found = parse_pauses(self.statuses.read(f"{job_id}.paused", self.owners, 4096))
        except (FileNotFoundError, UnsafeFile):
            return None
        return found if found is not None and found.attempt == attempt else None

    def write_pauses(self, job_id: str, pauses: Pauses) -> None:
        self.statuses.write_atomic(f"{job_id}.paused", pauses.encode(), self.file_mode)

    def delete_job(self, job_id: str) -> None:
        """Delete a job's status, log, checkpoint and lock files (the caller, the ledger,
        holds the job's lock and records it). Its line in a record is struck first, so it
        never stands for the job again. Raises OSError (a record this process may not
        write: nothing is deleted)."""
        self.queued.strike(job_id)
        with contextlib.suppress(OSError):  # a member's, left to her: it holds no secret of ours
            self.checkpoints.remove(job_id)
        self.log_folder.unlink(f"{job_id}.log")
        self.log_folder.unlink(f"{job_id}.hook.log")
        for name in (f"{job_id}.json", f"{job_id}.env", f"{job_id}.inline", f"{job_id}.hook", f"{job_id}.paused",
                     f"{job_id}.lock"):
            self.statuses.unlink(name)

    # ------------------------------------------------------------ the one-manager guard
    def lock_manager(self) -> int:
        """Hold the spool for this process; raises ManagerRunning naming the holder.

        The guard is a lock on the spool folder itself, which cannot be deleted away
        (a lock file can: an operator "cleaning a stale lock" once let a second manager
        run jobs twice)."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if not flock_within(fd, fcntl.LOCK_EX, GUARD_PATIENCE):
            os.close(fd)
            raise ManagerRunning(str(self.root), self.manager_pid())
        self.top.unlink("manager.lock")  # the guard of older versions: a plain file
        return fd

    def mark_serving(self, serving: Serving) -> None:
        """Say who serves the spool, and how (``Serving``)."""
        self.say_serving(serving)
        self.top.write_atomic("manager.pid", str(os.getpid()).encode(), 0o644)

    def say_serving(self, serving: Serving) -> None:
        """manager.json: what ``Serving`` holds, with the serving process's pid and start
        time (pids are reused). Anyone who may read the spool may read it."""
        pid = os.getpid()
        self.top.write_atomic("manager.json", orjson.dumps(
            {"pid": pid, "started": process_start_time(pid), **dataclasses.asdict(serving)}), 0o644)

    def serving(self) -> Serving | None:
        """What the serving manager says of itself; None when none serves."""
        if not self.manager_running():
            return None
        doc = self._serving()
        kept: dict[str, Any] = {}
        for name, kind in SERVING_TYPES.items():  # what a file may say, each checked
            value = doc.get(name)
            kept[name] = value if isinstance(value, kind) and isinstance(value, bool) == (kind is bool) else None
        modules = kept["task_modules"]
        kept["task_modules"] = tuple(modules) if modules is not None and all(
            isinstance(m, str) for m in modules) else None
        hosts = kept["hosts"]
        kept["hosts"] = [h for h in hosts if is_host(h)] if hosts is not None else None
        return Serving(**kept)

    def clear_serving(self) -> None:
        self.top.unlink("manager.pid")
        self.top.unlink("manager.json")

    def _serving(self) -> dict[str, Any]:
        """What the serving manager (or the last one) said of itself in manager.json."""
        try:
            doc = orjson.loads(self.top.read("manager.json", self.owners, 1 << 16))
        except (OSError, UnsafeFile, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def serving_pid(self) -> int | None:
        """The pid of the manager serving the spool: the one manager.json names, if that
        very process (its start time says so) is alive and the guard is held. What
        `pool stop` may signal: never a pid reused by another process."""
        doc = self._serving()
        pid, started = doc.get("pid"), doc.get("started")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1 or not isinstance(started, (int, type(None))):
            return None
        return pid if is_running(pid, started) and self.manager_running() else None

    def manager_pid(self) -> int | None:
        try:
            return int(self.top.read("manager.pid", self.owners, 32))
        except (OSError, ValueError):
            return None

    def manager_running(self) -> bool:
        """True while some process holds the spool (a stale pid file says nothing). A
        member of a shared spool cannot open it to ask: for her, the manager manager.json
        names is alive (that very process: its start time says so)."""
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except PermissionError:
            doc = self._serving()
            pid, started = doc.get("pid"), doc.get("started")
            return isinstance(pid, int) and pid > 1 and isinstance(started, int) and is_running(pid, started)
        except OSError:
            return False
        os.close(fd)
        return is_held(lambda: os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
