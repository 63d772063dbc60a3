"""Control: the requests clients file for the manager (kill, retry), carried out.

    requests/kill-<id>  --> running (an attempt the executor started, or took over from a
                            previous manager): executor.stop(CANCEL, grace); the request
                            stays until the job is final: `pool kill` waits for that
                            run by an inline manager of its own (`pool run`): left to it
                            queued (here, handed over but not begun, or nowhere yet):
                            cancelled on disk (a runner reads it before it begins);
                            not in the spool yet: kept until it arrives (a minute at most)
    requests/retry-<id> --> a job that has ended is queued again; the request goes
    requests/workers-<n> --> the executor runs n attempts at a time from now on (the
                            spool's owner or root only); manager.json says so

In a shared spool a member may kill and retry the jobs she submitted; the spool's owner
(and root) any job. A request that cannot be read is removed and says why in the log;
one with a bad value (a grace of "5s") is carried out with the default.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable

from . import lifecycle
from .clock import iso_now
from .context import Context
from .dispatch import Dispatch
from .errors import CorruptStatus, JobBusy, JobNotFound
from .executor import StopReason
from .model import JobStatus
from .pausing import Pausing
from .requests import MAX_WORKERS, Request, RequestKind

log = logging.getLogger(__name__)

KILL_WAITS_FOR_JOB = 60.0  # seconds a kill of an id not yet in the spool is kept
HELD_RECHECK = 0.5  # seconds before a request its writer holds a lease on is looked at again


class Control:
    def __init__(self, ctx: Context, dispatch: Dispatch, pausing: Pausing, only: str | None = None,
                 resized: Callable[[int], None] = lambda workers: None,
                 compact: Callable[[float], None] = lambda asked_at: None) -> None:
        self.ctx = ctx
        self.pausing = pausing
        self.resized = resized  # how the manager says the new number of workers
        self.compact = compact  # how the manager compacts its index of final documents
        self.spool = ctx.spool
        self.dispatch = dispatch
        self.executor = dispatch.executor
        self.only = only  # an inline manager carries out the kill of its one job only
        self.kills: set[str] = set()  # ids with a kill request on file
        self.early: set[str] = set()  # ids with a pause or resume request on file, not in the spool yet
        self.stopping: set[str] = set()  # kills carried out (said once), waiting for the job's end
        self.recheck_at: float | None = None
        self.arrivals = False  # jobs were taken in since the last look at requests/

    def apply(self, now: float) -> None:
        """Carry out every request on file (each at most once per call)."""
        self.recheck_at = None
        self.arrivals = False
        for request in self.requests():
            try:
                done = self.kill(request, now) if request.kind is RequestKind.KILL else self.retry(request) \
                    if request.kind is RequestKind.RETRY else self.resize(request) \
                    if request.kind is RequestKind.WORKERS else self.compact_index(request) \
                    if request.kind is RequestKind.COMPACT else self.pause_or_resume(request, now)
            except Exception:  # one request's trouble never stops the manager
                log.exception("request %s-%s could not be carried out", request.kind.value, request.job_id)
                done = True
            if done:
                self.spool.box.drop(request.kind, request.job_id)
                if request.kind not in (RequestKind.WORKERS, RequestKind.COMPACT):
                    self.kills.discard(request.job_id)

    def requests(self) -> list[Request]:
        owners = self.spool.submitters(self.ctx.config.group_gid)
        if self.only is not None:
            one = self.spool.box.read_one(RequestKind.KILL, self.only, owners)
            return [one] if one is not None else []
        requests, bad = self.spool.box.pending(owners)
        for name, why in bad:
            self.set_aside(name, why)
        if self.spool.box.held:  # a request held by its writer's lease: looked at again soon
            self.recheck(self.ctx.clock.monotonic() + HELD_RECHECK)
        return requests

    def recheck(self, at: float) -> None:
        """Look at the requests again at ``at`` (monotonic), or sooner if asked."""
        self.recheck_at = at if self.recheck_at is None else min(self.recheck_at, at)

    def set_aside(self, name: str, why: str) -> None:
        """What is in requests/ but is not a request (a folder, a FIFO, a link, a stray
        name) goes to rejected/, untouched, with why: never carried out, never in the way."""
        log.warning("requests/%s set aside: %s", name, why)
        try:
            self.spool.drop.reject_from(self.spool.box.folder, name, f"request.{name}", f"requests/{name} {why}")
        except FileNotFoundError:
            pass
        except OSError as exc:  # one entry's trouble is that entry's
            log.error("requests/%s could not be set aside: %s", name, exc)

    def finished(self, job_id: str) -> None:
        """The job became final: a kill request for it has nothing left to do."""
        self.stopping.discard(job_id)
        if job_id in self.kills or job_id == self.only:
            self.kills.discard(job_id)
            self.spool.box.drop(RequestKind.KILL, job_id)

    def arrived(self, job_id: str) -> None:
        """A job was just taken in: a kill (or pause) filed before it arrived applies now."""
        if job_id in self.kills or job_id in self.early:
            self.recheck(self.ctx.clock.monotonic())
        else:
            self.arrivals = True

    def unheard(self) -> bool:
        """Whether requests/ must be looked at before anything is started: jobs were taken
        in and it holds something. incoming/ and requests/ are watched apart, so their
        events come in any order: a kill filed before its job came may not be heard of
        yet when the job is (seen in CI: the job ran once before its kill). One listing
        per turn that takes jobs in, only then; the kills already on record (kept until
        their job ends) do not count."""
        arrivals, self.arrivals = self.arrivals, False
        if not arrivals:
            return False
        known = {f"{RequestKind.KILL.value}-{job_id}" for job_id in self.kills}
        return any(not name.startswith(".") and name not in known for name in self.spool.box.folder.listdir())

    # ------------------------------------------------------------ kill
    def kill(self, request: Request, now: float) -> bool:
        """Carry out a kill request; True when the request has nothing more to do."""
        job_id = request.job_id
        if request.problem:
            log.warning("kill request for job %s: %s; using the default grace", job_id, request.problem)
        grace = request.grace if request.grace is not None else self.ctx.config.kill_grace
        try:
            status = self.spool.read_status(job_id)
        except JobNotFound:
            waited = self.ctx.clock.time() - request.filed_at
            if waited < KILL_WAITS_FOR_JOB:
                self.kills.add(job_id)  # its file may still be on its way in through incoming/
                return False
            log.warning("kill request for job %s dropped: no such job after %.0fs", job_id, waited)
            return True
        except CorruptStatus as exc:
            self.ctx.ledger.set_aside(job_id, str(exc))
            return True
        if not self.may_act(request.uid, status):
            log.warning("kill request for job %s by uid %d refused: submitted by uid %s", job_id, request.uid,
                        status.submitter)
            return True
        if status.state.is_final:
            return True
        if request.unstarted:
            return self.cancel_unstarted(job_id)
        self.kills.add(job_id)
        stopping = self.executor.stop(job_id, StopReason.CANCEL, grace, now)
        if stopping is not None and stopping.began:
            if job_id not in self.stopping:
                self.stopping.add(job_id)
                log.info("job %s: cancelling (SIGTERM, SIGKILL after %gs)", job_id, grace)
            return False  # dropped when the job is final
        if stopping is None and self.only is None and self.spool.locks.is_supervised(job_id):
            return False  # an inline manager of its own runs it and carries the request out
        # Queued: in our queue, handed over but not begun (whatever runs it reads the
        # status before it begins), or run by nobody. Cancelled on disk, under its lock.
        try:
            self.ctx.ledger.change(job_id, lifecycle.cancel_if_queued(iso_now(self.ctx.clock)),
                                   "cancelled by request", wait=0)
        except JobBusy:  # a runner is beginning it this very moment: next turn it runs, and is stopped
            self.recheck(now + (0.01 if stopping is not None else 1.0))
            return False
        self.dispatch.forget(job_id)
        return False

    def cancel_unstarted(self, job_id: str) -> bool:
        """A kill of the job only if it has not begun (a future's ``cancel()``): decided
        under the job's lock, which a runner holds from before it begins (its status may
        say queued a while after: it is written with the first report). Nothing is asked
        of the executor: a runner sent the job finds it cancelled and does not begin it."""
        with contextlib.suppress(JobBusy):  # held by its runner: it began, and runs on
            self.ctx.ledger.change(job_id, lifecycle.cancel_if_unstarted(iso_now(self.ctx.clock)),
                                   "cancelled by request (not started)", wait=0)
        return True

    def may_act(self, uid: int, status: JobStatus) -> bool:
        """The spool's owner and root act on any job; a member of a shared spool on hers."""
        return uid in (os.geteuid(), 0) or (status.submitter is not None and uid == status.submitter)

    # ------------------------------------------------------------ pause, resume
    def pause_or_resume(self, request: Request, now: float) -> bool:
        try:
            status = self.spool.read_status(request.job_id)
        except JobNotFound:  # its file may still be on its way in through incoming/
            self.early.add(request.job_id)
            return self.ctx.clock.time() - request.filed_at >= KILL_WAITS_FOR_JOB
        except CorruptStatus:
            return True
        self.early.discard(request.job_id)
        if not self.may_act(request.uid, status):
            log.warning("%s request for job %s by uid %d refused", request.kind.value, request.job_id, request.uid)
            return True
        act = self.pausing.pause if request.kind is RequestKind.PAUSE else self.pausing.resume
        again = act(status, now)
        if again is None:
            return True
        self.recheck(again)
        return False

    # ------------------------------------------------------------ workers
    def resize(self, request: Request) -> bool:
        workers = int(request.job_id) if request.job_id.isdigit() else 0
        if request.uid not in (os.geteuid(), 0):
            log.warning("workers request by uid %d refused: only the spool's owner sets the workers", request.uid)
        elif not 1 <= workers <= MAX_WORKERS:
            log.warning("workers request %r refused: a number of workers is 1 to %d", request.job_id, MAX_WORKERS)
        elif self.only is None:
            log.info("%d workers from now on (pool workers)", workers)
            self.executor.resize(workers)
            self.resized(workers)
        return True

    def compact_index(self, request: Request) -> bool:
        """`pool prune` removed many jobs: their lines in status/index.final are dropped
        now, not once as many more have come (which may be never)."""
        if request.uid not in (os.geteuid(), 0):
            log.warning("compact request by uid %d refused: only the spool's owner prunes it", request.uid)
        elif request.job_id == "index" and self.only is None:
            self.compact(request.filed_at)
        return True

    # ------------------------------------------------------------ retry
    def retry(self, request: Request) -> bool:
        try:
            status = self.spool.read_status(request.job_id)
            if not self.may_act(request.uid, status):
                log.warning("retry request for job %s by uid %d refused", request.job_id, request.uid)
                return True
            if request.fresh and status.state.is_final:  # never the checkpoint of an attempt under way
                try:
                    self.spool.checkpoints.remove(request.job_id)
                except OSError as exc:
                    log.error("retry --fresh of job %s refused: cannot remove its checkpoint (%s)", request.job_id, exc)
                    return True
            self.ctx.ledger.change(request.job_id, lifecycle.retry_if_final(iso_now(self.ctx.clock)),
                                   "retry requested", wait=0)
        except JobBusy:
            self.recheck(self.ctx.clock.monotonic() + 0.01)
            return False
        except (JobNotFound, CorruptStatus):
            pass
        return True  # dropped last: a client waiting on the request then finds the new state
