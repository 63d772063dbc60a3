"""Jobs that wait: for their time (``at``, ``delay``), for the jobs they come after
(``after``), or both. Each is released into the queue, or cancelled, by the manager.

    hook: a job became waiting --> watch: its time held by dispatch's timer, it is
                                   noted under each job it comes after, and looked at
    hook: a job ended          --> the jobs that come after it are looked at
    timer: its time came       --> looked at
    settle (each turn)         --> every job to look at: released (its time came and its
                                   dependencies are through), cancelled (one of them
                                   failed or was cancelled, and it needs them done), or
                                   left waiting

Looking at a job reads its status and those of the jobs it comes after, from the spool:
what the files say is the truth, also for a manager started after some of them ended. A
cancel made here is heard like any other change, and so looks at the jobs that come
after the cancelled one in turn: a chain ends in a loop, never in a recursion, however
long it is.
"""

from __future__ import annotations

import dataclasses
import logging

from . import lifecycle
from .clock import iso_now
from .context import Context
from .dispatch import Dispatch
from .errors import CorruptStatus, JobBusy, JobNotFound
from .model import JobStatus, State, parse_time
from .trouble import RETRY

log = logging.getLogger(__name__)

BUSY_RETRY = 0.05  # seconds before a job a client holds a moment is looked at again
SETTLE_SLICE = 0.02  # seconds of looking per turn: 10,000 jobs after one never stall the loop


class Waiting:
    def __init__(self, ctx: Context, dispatch: Dispatch) -> None:
        self.ctx = ctx
        self.dispatch = dispatch
        self.dependants: dict[str, set[str]] = {}  # job id -> waiting jobs that come after it
        # In order, each once: an end is both heard and reported by the executor.
        self.to_look_at: dict[str, None] = {}

    def watch(self, status: JobStatus) -> None:
        """A job became waiting (taken in, retried, or found so at start)."""
        if status.waits and "until" in status.waits:
            self.dispatch.hold(status)
        for dependency in status.spec.after:
            self.dependants.setdefault(dependency, set()).add(status.id)
        self.to_look_at[status.id] = None

    def ended(self, job_id: str) -> None:
        """A job reached a final state, left the spool, or its attempt ended (the end of
        one a worker of an earlier manager ran is not heard as a change: its status says
        it). Those that come after it are looked at, and stay noted until they go."""
        self.to_look_at.update(dict.fromkeys(self.dependants.get(job_id, ())))

    def due(self, job_id: str) -> None:
        """Its time came."""
        self.to_look_at[job_id] = None

    def busy(self) -> bool:
        """Jobs are left to look at: the loop is to come back at once."""
        return bool(self.to_look_at)

    def settle(self, now: float) -> None:
        """Look at the jobs to look at, for a slice of time (the rest next turn)."""
        deadline = self.ctx.clock.monotonic() + SETTLE_SLICE
        while self.to_look_at and self.ctx.clock.monotonic() < deadline:
            job_id = next(iter(self.to_look_at))
            del self.to_look_at[job_id]
            try:
                self._look_at(job_id)
            except JobBusy:  # a client cancelling it holds its lock a moment
                self.dispatch.hold_until(job_id, now + BUSY_RETRY)
            except (JobNotFound, CorruptStatus):
                pass  # gone, or set aside by whoever reads it next
            except OSError:
                self.dispatch.hold_until(job_id, now + RETRY)
                raise

    def _look_at(self, job_id: str) -> None:
        now = iso_now(self.ctx.clock)
        seen: list[JobStatus] = []

        def change(status: JobStatus) -> JobStatus | None:
            seen.append(status)
            if status.state is not State.WAITING:
                return None
            blocked, ended = self.dependencies(status)
            if ended is not None:
                return lifecycle.cancel_for_dependency(status, now, *ended)
            until = status.waits.get("until") if status.waits else None
            if blocked or (status.waits or {}).get("paused"):
                return None  # a dependency that ends looks at it again; `pool resume`, a held one
            if isinstance(until, str) and parse_time(until).timestamp() > self.ctx.clock.time():
                # Its time, not yet come (or a timer a hair early), is all it waits for
                # now: said so (a dependency pruned meanwhile no longer counts), and
                # the timer looks at it again.
                self.dispatch.hold(status)
                return None if set(status.waits or {}) == {"until"} else dataclasses.replace(
                    status, waits={"until": until}, updated_at=now)
            return lifecycle.release(now)(status)

        written = self.ctx.ledger.change(job_id, change, wait=0) or (seen[-1] if seen else None)
        if written is not None and written.state is not State.WAITING:
            self._gone(written)

    def _gone(self, status: JobStatus) -> None:
        """It waits no more (released, cancelled): it is noted under nothing."""
        for dependency in status.spec.after:
            waiting = self.dependants.get(dependency)
            if waiting is not None:
                waiting.discard(status.id)
                if not waiting:
                    del self.dependants[dependency]

    def dependencies(self, status: JobStatus) -> tuple[bool, tuple[str, str] | None]:
        """(whether some job it comes after has not ended as it needs yet, the one that
        never will and how: failed, cancelled, or is gone, when it needs them done)."""
        blocked = False
        # What its status says it still waits for: once they are through, that is said
        # (a dependency done and pruned meanwhile is not looked for again).
        after = status.waits.get("after", []) if status.waits else []
        for dependency in after if isinstance(after, list) else []:
            try:
                state: State | None = self.ctx.spool.read_status(dependency).state
            except (JobNotFound, CorruptStatus, OSError):  # gone, or unreadable: one job's trouble
                state = None
            if status.spec.after_policy == "finished":
                blocked = blocked or (state is not None and not state.is_final)
            elif state is None:
                return False, (dependency, "is gone")
            elif state in (State.FAILED, State.CANCELLED):
                return False, (dependency, state.value)
            else:
                blocked = blocked or state is not State.DONE
        return blocked, None
