"""requests/: what clients ask the manager to do to a job (``pool kill``, ``pool retry``,
``pool pause``, ``pool resume``), or to itself (``pool workers N``).

A request is a file ``<kind>-<id>`` holding a small JSON object; the manager carries it
out and removes it. The folder is read like incoming/ (no links, no FIFOs, small files
of the spool's owner or its group only), since anyone who may submit may ask.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path

import orjson

from .errors import InvalidArgument
from .model import ID_PATTERN
from .rules import is_number
from .safeio import Folder, HeldFile, Owners, UnsafeFile

MAX_REQUEST_BYTES = 4096
MAX_GRACE = 3600.0
MAX_WORKERS = 1024


class RequestKind(str, enum.Enum):
    KILL = "kill"
    RETRY = "retry"
    WORKERS = "workers"  # workers-<n>: the manager's, not a job's (its "id" is the number)
    COMPACT = "compact"  # compact-index: the manager's, after many jobs were pruned (pool/finalindex.py)
    PAUSE = "pause"
    RESUME = "resume"


@dataclass(frozen=True, slots=True)
class Request:
    kind: RequestKind
    job_id: str
    uid: int  # who asked (the file's owner): in a shared spool, members act on their own jobs
    filed_at: float  # wall-clock time the file was written
    grace: float | None = None  # a kill's seconds between SIGTERM and SIGKILL; None: the default
    problem: str | None = None  # what in the request was not understood (the rest still stands)
    unstarted: bool = False  # a kill of a job only if it has not started (a future's cancel())
    fresh: bool = False  # a retry that first removes the job's checkpoint (`pool retry --fresh`)


def check_grace(grace: object) -> float:
    """A kill's grace as seconds; raises InvalidArgument (``grace="5s"`` is a mistake to
    report to its caller, not a file for the manager to choke on)."""
    if not is_number(grace) or not 0 <= grace <= MAX_GRACE:
        raise InvalidArgument(f"grace must be a number of seconds from 0 to {MAX_GRACE:g}, got {grace!r}")
    return float(grace)


class RequestBox:
    def __init__(self, path: Path) -> None:
        self.folder = Folder(path)
        self.held = False  # the last look left a request its writer holds a lease on

    def file(self, kind: RequestKind, job_id: str, grace: float | None = None, unstarted: bool = False,
             fresh: bool = False) -> None:
        payload: dict[str, object] = {"grace": check_grace(grace)} if grace is not None else {}
        if unstarted:
            payload["unstarted"] = True
        if fresh:
            payload["fresh"] = True
        self.folder.write_atomic(f"{kind.value}-{job_id}", orjson.dumps(payload), 0o640)

    def is_pending(self, kind: RequestKind, job_id: str) -> bool:
        return self.folder.has(f"{kind.value}-{job_id}")

    def drop(self, kind: RequestKind, job_id: str) -> None:
        self.folder.unlink(f"{kind.value}-{job_id}")

    def pending(self, owners: Owners) -> tuple[list[Request], list[tuple[str, str]]]:
        """The requests waiting, oldest first, and the entries that are not requests at
        all (name, why): those are removed by the caller, never carried out. A request
        its writer holds a lease on is left for a later look (``held`` says so)."""
        found: list[Request] = []
        bad: list[tuple[str, str]] = []
        self.held = False
        for name in sorted(self.folder.listdir()):
            if name.startswith("."):
                continue  # a writer's temp file
            kind_name, _, job_id = name.partition("-")
            if kind_name not in RequestKind._value2member_map_ or not ID_PATTERN.match(job_id):
                bad.append((name, "is not a request: names are kill-, retry-, pause-, resume-<id>, workers-<n> or "
                                  "compact-index"))
                continue
            try:
                found.append(self._read(name, RequestKind(kind_name), job_id, owners))
            except FileNotFoundError:
                continue
            except HeldFile:
                self.held = True
            except UnsafeFile as exc:
                bad.append((name, str(exc)))
        found.sort(key=lambda r: r.filed_at)
        return found, bad

    def _read(self, name: str, kind: RequestKind, job_id: str, owners: Owners) -> Request:
        fd, st = self.folder.open_checked(name, owners, MAX_REQUEST_BYTES)
        try:
            data = os.read(fd, MAX_REQUEST_BYTES + 1)
        finally:
            os.close(fd)
        grace, problem, unstarted, fresh = None, None, False, False
        try:
            payload = orjson.loads(data) if data.strip() else {}
            if not isinstance(payload, dict):
                raise InvalidArgument("a request holds a JSON object")
            unstarted = kind is RequestKind.KILL and payload.get("unstarted") is True
            fresh = kind is RequestKind.RETRY and payload.get("fresh") is True
            if kind is RequestKind.KILL and payload.get("grace") is not None:
                grace = check_grace(payload["grace"])
        except (orjson.JSONDecodeError, InvalidArgument) as exc:
            problem = str(exc)
        return Request(kind, job_id, st.st_uid, st.st_mtime, grace, problem, unstarted, fresh)

    def read_one(self, kind: RequestKind, job_id: str, owners: Owners) -> Request | None:
        """The request of this kind for this job, if one is on file (and readable)."""
        try:
            return self._read(f"{kind.value}-{job_id}", kind, job_id, owners)
        except (FileNotFoundError, UnsafeFile, HeldFile):
            return None
