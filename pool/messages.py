"""What a manager (or an inline supervisor) and its worker processes say to each other:
one small frozen dataclass per message, JSON on the wire (never Python objects).

    manager <--Ready------------- (once: it leads its own process group) worker
    manager --RunAttempt(job)--------------------------------------------> worker
    manager <--Changed(transitions)-------- (the job's start, once written) worker
    manager <--Finished | Skipped | Crashed (the attempt is over) ------- worker

No attempt goes to a worker before its Ready: a stop signals the worker's process group,
which does not exist until the worker has made it (a worker still starting on a loaded
machine would miss the SIGTERM and run the job it was to be stopped from). A worker
answers every RunAttempt with exactly one of the last three. The manager's copy
of the job may be stale: the worker checks it against the status file, under the job's
lock, before it starts anything (the file is the truth).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .ledger import Transition
from .model import JobStatus, State, encode_json


@dataclass(frozen=True, slots=True)
class RunAttempt:
    """Run the job's attempt ``job.attempt`` (sent ahead, it begins when the one running
    now ends: the worker's pipe is its queue). The status is the manager's copy (checked
    when it was read or written): the worker holds it against the file, under the job's
    lock, before it starts anything."""

    job: JobStatus

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def attempt(self) -> int:
        return self.job.attempt

    def encode(self) -> bytes:
        return encode_json({"job": self.job.to_dict()})

    @classmethod
    def decode(cls, data: bytes) -> RunAttempt:
        doc = orjson.loads(data)
        return cls(JobStatus.from_dict(doc["job"], trusted=True))


@dataclass(frozen=True, slots=True)
class Ready:
    """The worker is set up, in a process group of its own: it takes attempts."""


@dataclass(frozen=True, slots=True)
class Changed:
    """State changes the worker wrote while the attempt runs (its start)."""

    transitions: tuple[Transition, ...]


@dataclass(frozen=True, slots=True)
class Finished:
    """The attempt ran to its end. Its outcome is written (``transitions``), or could
    not be (``unrecorded`` is the outcome, ``why`` the reason): the manager writes it."""

    job_id: str
    attempt: int
    transitions: tuple[Transition, ...] = ()
    unrecorded: JobStatus | None = None
    why: str | None = None


@dataclass(frozen=True, slots=True)
class Skipped:
    """The attempt did not start: the job's status says otherwise (``state``, None when
    it could not be read), another process holds it, or its start could not be recorded."""

    job_id: str
    attempt: int
    state: State | None
    why: str


@dataclass(frozen=True, slots=True)
class Crashed:
    """The worker itself failed (a bug, an unusable spool); ``started``: whether the
    attempt's own code had begun."""

    job_id: str
    attempt: int
    started: bool
    why: str


Reply = Ready | Changed | Finished | Skipped | Crashed


def encode_reply(reply: Reply) -> bytes:
    doc: dict[str, Any]
    if isinstance(reply, Ready):
        doc = {"kind": "ready"}
    elif isinstance(reply, Changed):
        doc = {"kind": "changed", "transitions": [t.to_dict() for t in reply.transitions]}
    elif isinstance(reply, Finished):
        doc = {"kind": "finished", "id": reply.job_id, "attempt": reply.attempt,
               "transitions": [t.to_dict() for t in reply.transitions],
               "unrecorded": reply.unrecorded.to_dict() if reply.unrecorded else None, "why": reply.why}
    elif isinstance(reply, Skipped):
        doc = {"kind": "skipped", "id": reply.job_id, "attempt": reply.attempt,
               "state": reply.state.value if reply.state else None, "why": reply.why}
    else:
        doc = {"kind": "crashed", "id": reply.job_id, "attempt": reply.attempt, "started": reply.started,
               "why": reply.why}
    return encode_json(doc)


def decode_reply(data: bytes) -> Reply:
    doc = orjson.loads(data)
    kind = doc["kind"]
    if kind == "ready":
        return Ready()
    if kind == "changed":
        return Changed(tuple(Transition.from_dict(t) for t in doc["transitions"]))
    if kind == "finished":
        unrecorded = JobStatus.from_dict(doc["unrecorded"]) if doc["unrecorded"] else None
        return Finished(doc["id"], doc["attempt"], tuple(Transition.from_dict(t) for t in doc["transitions"]),
                        unrecorded, doc["why"])
    if kind == "skipped":
        return Skipped(doc["id"], doc["attempt"], State(doc["state"]) if doc["state"] else None, doc["why"])
    if kind == "crashed":
        return Crashed(doc["id"], doc["attempt"], doc["started"], doc["why"])
    raise ValueError(f"unknown reply kind {kind!r}")
