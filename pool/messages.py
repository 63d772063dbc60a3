"""What an executor and the processes that run attempts say to each other: one small
frozen dataclass per message, JSON on the wire (never Python objects).

A local worker (pool/worker.py) writes the job's status and log itself, in the spool:

    executor <--Ready------------------ (once: it leads its own process group) worker
    executor --RunAttempt(job)--------------------------------------------> worker
    executor --TakeBack(job)----- (of a RunAttempt sent ahead, not begun) -> worker
    executor <--Changed(transitions)---- (the job's start, once written) ---- worker
    executor <--Ran | Skipped | Broke--- (the attempt is over) ------------- worker

A detached runner (pool/detached.py: no spool where it runs) reports everything instead:

    executor --RunAttempt(job)--------------------------------------------> runner
    executor <--Started, then Progressed...------------------------------- runner
    executor <--Ran(verdict) | Broke-------------------------------------- runner

No attempt goes to a local worker before its Ready: a stop signals the worker's process
group, which does not exist until the worker has made it (a worker still starting on a
loaded machine would miss the SIGTERM and run the job it was to be stopped from). A
runner answers every RunAttempt with exactly one of Ran, Skipped, Broke. The executor's
copy of the job may be stale: a local worker checks it against the status file, under
the job's lock, before it starts anything (the file is the truth).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .ledger import Transition
from .lifecycle import Failed, Succeeded, Verdict
from .model import AttachedEnv, JobStatus, State, encode_json
from .usage import Usage, is_usage


@dataclass(frozen=True, slots=True)
class RunAttempt:
    """Run the job's attempt ``job.attempt`` (sent ahead, it begins when the one running
    now ends: the worker's pipe is its queue). The status is the manager's copy, exactly
    as it was written: a worker holds it against the file, under the job's lock, before
    it starts anything."""

    job: JobStatus

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def attempt(self) -> int:
        return self.job.attempt

    def encode(self) -> bytes:
        """The status as a document has it, and the values of its environment beside it
        (a status document names them only)."""
        env = self.job.spec.caller_env
        return encode_json({"job": self.job.to_dict(), "env": dict(env) if isinstance(env, Mapping) else None})

    @classmethod
    def decode(cls, data: bytes) -> RunAttempt:
        return cls.from_doc(orjson.loads(data))

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> RunAttempt:
        job = JobStatus.from_dict(doc["job"], trusted=True)
        if doc.get("env") is not None:
            job = dataclasses.replace(job, spec=dataclasses.replace(job.spec, caller_env=AttachedEnv(doc["env"])))
        return cls(job)


@dataclass(frozen=True, slots=True)
class TakeBack:
    """Do not begin attempt ``attempt`` of ``job_id``, sent ahead: a job of higher priority
    is to have this worker's turn, or another worker is free sooner. A worker that began
    it already (it had not yet heard) runs it on, and drops this; one that had not
    answers Skipped (TAKEN_BACK) at once, whatever it runs meanwhile."""

    job_id: str
    attempt: int

    def encode(self) -> bytes:
        return encode_json({"take_back": self.job_id, "attempt": self.attempt})


TAKEN_BACK = "taken back before it began (for a job of higher priority, or a worker free sooner)"
Order = RunAttempt | TakeBack


def decode_order(data: bytes) -> Order:
    doc = orjson.loads(data)
    if "take_back" in doc:
        return TakeBack(doc["take_back"], doc["attempt"])
    return RunAttempt.from_doc(doc)


@dataclass(frozen=True, slots=True)
class Ready:
    """The worker is set up, in a process group of its own: it takes attempts."""


@dataclass(frozen=True, slots=True)
class Changed:
    """State changes a local worker wrote while the attempt runs (its start)."""

    transitions: tuple[Transition, ...]


@dataclass(frozen=True, slots=True)
class Started:
    """A detached runner begins the attempt's code now, in process ``pid``."""

    job_id: str
    attempt: int
    pid: int
    started_at: str


@dataclass(frozen=True, slots=True)
class Progressed:
    """How far the attempt a detached runner runs is (throttled as a worker's writes are)."""

    job_id: str
    attempt: int
    fraction: float | None
    message: str | None


@dataclass(frozen=True, slots=True)
class Ran:
    """The attempt ran to its end. A local worker wrote its outcome (``transitions``);
    when it could not (``why``), or when the runner writes nothing (detached), the
    ``verdict`` and the last ``progress`` are for the executor's manager to write."""

    job_id: str
    attempt: int
    transitions: tuple[Transition, ...] = ()
    verdict: Verdict | None = None
    progress: tuple[float | None, str | None] | None = None
    why: str | None = None


@dataclass(frozen=True, slots=True)
class Skipped:
    """The attempt did not begin: the job's status says otherwise (``state``, None when
    it could not be read), another process holds it, or its start could not be recorded
    (``later``: the spool could not be written; try again after a pause)."""

    job_id: str
    attempt: int
    state: State | None
    why: str
    later: bool = False


@dataclass(frozen=True, slots=True)
class Broke:
    """The worker itself failed (a bug, an unusable spool), not the job's code;
    ``began``: whether the attempt's own code had begun."""

    job_id: str
    attempt: int
    began: bool
    why: str


Reply = Ready | Changed | Started | Progressed | Ran | Skipped | Broke


def encode_verdict(verdict: Verdict | None) -> dict[str, Any] | None:
    if verdict is None:
        return None
    usage = verdict.usage.to_dict() if verdict.usage is not None else None
    if isinstance(verdict, Succeeded):
        return {"ok": True, "result": verdict.result, "exit_code": verdict.exit_code, "usage": usage}
    return {"ok": False, "error": dict(verdict.error), "exit_code": verdict.exit_code, "usage": usage}


def decode_verdict(doc: dict[str, Any] | None) -> Verdict | None:
    if doc is None:
        return None
    usage = doc.get("usage")
    # What a runner says it used is checked like any status field (a member's runner is hers).
    used = Usage.from_dict(usage) if is_usage(usage) else None
    if doc["ok"]:
        return Succeeded(doc["result"], doc["exit_code"], used)
    return Failed(doc["error"], doc["exit_code"], used)


def encode_reply(reply: Reply) -> bytes:
    doc: dict[str, Any]
    if isinstance(reply, Ready):
        doc = {"kind": "ready"}
    elif isinstance(reply, Changed):
        doc = {"kind": "changed", "transitions": [t.to_dict() for t in reply.transitions]}
    elif isinstance(reply, Started):
        doc = {"kind": "started", "id": reply.job_id, "attempt": reply.attempt, "pid": reply.pid,
               "started_at": reply.started_at}
    elif isinstance(reply, Progressed):
        doc = {"kind": "progressed", "id": reply.job_id, "attempt": reply.attempt, "fraction": reply.fraction,
               "message": reply.message}
    elif isinstance(reply, Ran):
        doc = {"kind": "ran", "id": reply.job_id, "attempt": reply.attempt,
               "transitions": [t.to_dict() for t in reply.transitions], "verdict": encode_verdict(reply.verdict),
               "progress": list(reply.progress) if reply.progress else None, "why": reply.why}
    elif isinstance(reply, Skipped):
        doc = {"kind": "skipped", "id": reply.job_id, "attempt": reply.attempt,
               "state": reply.state.value if reply.state else None, "why": reply.why, "later": reply.later}
    else:
        doc = {"kind": "broke", "id": reply.job_id, "attempt": reply.attempt, "began": reply.began, "why": reply.why}
    return encode_json(doc)


def decode_reply(data: bytes) -> Reply:
    doc = orjson.loads(data)
    kind = doc["kind"]
    if kind == "ready":
        return Ready()
    if kind == "changed":
        return Changed(tuple(Transition.from_dict(t) for t in doc["transitions"]))
    if kind == "started":
        return Started(doc["id"], doc["attempt"], doc["pid"], doc["started_at"])
    if kind == "progressed":
        return Progressed(doc["id"], doc["attempt"], doc["fraction"], doc["message"])
    if kind == "ran":
        progress = doc["progress"]
        return Ran(doc["id"], doc["attempt"], tuple(Transition.from_dict(t) for t in doc["transitions"]),
                   decode_verdict(doc["verdict"]), (progress[0], progress[1]) if progress else None, doc["why"])
    if kind == "skipped":
        return Skipped(doc["id"], doc["attempt"], State(doc["state"]) if doc["state"] else None, doc["why"],
                       doc["later"])
    if kind == "broke":
        return Broke(doc["id"], doc["attempt"], doc["began"], doc["why"])
    raise ValueError(f"unknown reply kind {kind!r}")
