"""Asking for something to be done to a job (cancel it, run it again), or by the manager
(run this many workers).

Kill and retry are requests (files in requests/) that the manager carries out; with no
manager serving, a change to a job nothing runs is made here, through the ledger, as
a client may (``lifecycle.MAY``). A job no manager took in yet is taken back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection
from typing import Any

from . import defaults, lifecycle
from .errors import InvalidArgument, JobBusy, JobNotFinished, JobNotFound, PoolError
from .finding import POLL_INTERVAL, Finding
from .model import UNDER_WAY, JobStatus, State, utc_now
from .requests import MAX_WORKERS, RequestKind, check_grace

REQUEST_TIMEOUT = 10.0  # a serving manager takes a request within milliseconds


class Requesting(Finding):
    def cancel(self, job_id: str, grace: float | None = None) -> JobStatus:
        """Ask for the job to be cancelled; returns its status right after asking.
        Raises InvalidArgument for a bad ``grace`` (seconds between SIGTERM and SIGKILL)."""
        if grace is not None:
            grace = check_grace(grace)
        status = self.status(job_id)
        if status.state.is_final:
            return status
        if self._take_back(job_id):
            return self.status(job_id)
        self.dir.box.file(RequestKind.KILL, job_id, grace)
        if not self.dir.manager_running():
            self._apply_without_manager(RequestKind.KILL, job_id, lifecycle.cancel_if_queued(utc_now()))
        return self.status(job_id)

    def kill_on_its_way(self, job_id: str, grace: float | None = None) -> None:
        """Ask for a job that is not in the spool yet (in a .jsonl no manager took in) to be
        cancelled: a manager keeps such a request a while, for the job to arrive."""
        self.dir.box.file(RequestKind.KILL, job_id, check_grace(grace) if grace is not None else None)

    def cancel_unstarted(self, job_ids: Collection[str], wait: bool = True) -> dict[str, bool]:
        """Cancel each job that has not started, and leave alone each that has (what
        ``Future.cancel`` does): says of each whether it is cancelled now. One request per
        job, all filed before any is waited for; the manager decides each under the job's
        lock. ``wait=False``: only file them (their ends are heard as any change is), and
        say nothing."""
        cancelled: dict[str, bool] = {}
        asked = []
        for job_id in job_ids:
            if self._take_back(job_id):
                cancelled[job_id] = True
            else:
                self.dir.box.file(RequestKind.KILL, job_id, unstarted=True)
                asked.append(job_id)
        serving = self.dir.manager_running()
        if asked and serving:
            if not wait:
                return {}
            self._await_requests(RequestKind.KILL, asked, REQUEST_TIMEOUT)
        for job_id in asked:
            if not serving:
                self._apply_without_manager(RequestKind.KILL, job_id, lifecycle.cancel_if_unstarted(utc_now()))
            self.dir.box.drop(RequestKind.KILL, job_id)  # carried out, or too late: never later
            try:
                cancelled[job_id] = self.status(job_id).state is State.CANCELLED
            except JobNotFound:
                cancelled[job_id] = False
        return cancelled

    def retry(self, job_id: str, dependants: bool = False, fresh: bool = False) -> JobStatus:
        """Run a job that has ended (done, failed or cancelled) again, as a fresh series
        of attempts, from attempt 1, with the same arguments; its code resumes from its
        last checkpoint (``pool.resume()``), unless ``fresh`` (`pool retry --fresh`): then
        the checkpoint is removed first. Raises JobNotFinished when it has not ended.
        ``dependants``: the jobs its end cancelled (and theirs, down the chain) are run
        again too, after it (`pool retry --dependants`)."""
        return self.retried(job_id, dependants, fresh)[0]

    def retried(self, job_id: str, dependants: bool = False, fresh: bool = False) -> list[JobStatus]:
        """``retry``, saying how every job run again is now: it first, then the jobs its
        end cancelled, when ``dependants``."""
        cancelled = self.cancelled_after(job_id) if dependants else []
        # It is run again first, so each dependant finds it waiting again, not failed.
        return [self._retry_one(one, fresh) for one in (job_id, *cancelled)]

    def cancelled_after(self, job_id: str) -> list[str]:
        """The jobs cancelled because ``job_id`` ended as it did, and those cancelled
        because of them, nearest first."""
        blamed = {s.id: d for s in self.statuses(State.CANCELLED) if (d := lifecycle.blamed_dependency(s))}
        found: list[str] = []
        frontier = [job_id]
        while frontier:
            ended = frontier.pop(0)
            for dependant, dependency in blamed.items():
                if dependency == ended and dependant not in found:
                    found.append(dependant)
                    frontier.append(dependant)
        return found

    def _retry_one(self, job_id: str, fresh: bool) -> JobStatus:
        status = self.status(job_id)
        if not status.state.is_final:
            raise JobNotFinished(f"job {job_id!r} is {status.state.value}; only a job that has ended can run again")
        self.dir.box.file(RequestKind.RETRY, job_id, fresh=fresh)
        if not self.dir.manager_running():
            try:
                if fresh:
                    self.dir.checkpoints.remove(job_id)
            except OSError:
                pass  # not ours to remove: the request waits for the next manager
            else:
                self._apply_without_manager(RequestKind.RETRY, job_id, lifecycle.retry_if_final(utc_now()))
        else:
            self._await_request(RequestKind.RETRY, job_id, REQUEST_TIMEOUT)
        return self.status(job_id)

    def pause(self, job_id: str) -> JobStatus:
        """Pause the job: a running one stops where it is (its whole process group is
        stopped, its timeout clock with it) until ``resume``; one not started is held
        (waiting, {"paused": true}). Returns its status once the manager took the request.
        Raises PoolError for a running job with no manager serving (only a manager pauses
        what runs), JobNotFound."""
        return self._pause_or_resume(RequestKind.PAUSE, RequestKind.RESUME, job_id, lifecycle.pause(utc_now()))

    def resume(self, job_id: str) -> JobStatus:
        """Undo ``pause``: a paused job runs on, a held one may start (with no manager
        serving, once one does: the request waits for it)."""
        return self._pause_or_resume(RequestKind.RESUME, RequestKind.PAUSE, job_id, None)

    def _pause_or_resume(self, kind: RequestKind, undone: RequestKind, job_id: str, change: Any) -> JobStatus:
        status = self.status(job_id)
        if status.state.is_final:
            return status
        serving = self.dir.manager_running()
        if not serving and status.state in UNDER_WAY:
            raise PoolError(f"job {job_id!r} is {status.state.value} and no manager serves {self.path}: only a "
                            "manager pauses and resumes a running job")
        self.dir.box.drop(undone, job_id)  # the last word counts
        self.dir.box.file(kind, job_id)
        if serving:
            self._await_request(kind, job_id, REQUEST_TIMEOUT)
        elif kind is RequestKind.PAUSE:  # a release is the manager's alone: the next one's
            self._apply_without_manager(kind, job_id, change)
        return self.status(job_id)

    def set_workers(self, workers: int) -> int | None:
        """Ask the serving manager to run ``workers`` attempts at a time from now on (until
        it stops: its --workers is what a restart runs); returns how many it says it runs
        once it took the request (the number it had when it refused it: only the spool's
        owner may). Raises InvalidArgument, PoolError when no manager serves."""
        if not 1 <= workers <= MAX_WORKERS:
            raise InvalidArgument(f"a number of workers is 1 to {MAX_WORKERS}, not {workers}")
        if not self.dir.manager_running():
            raise PoolError(f"no manager is serving {self.path}")
        self.dir.box.file(RequestKind.WORKERS, str(workers))
        self._await_request(RequestKind.WORKERS, str(workers), REQUEST_TIMEOUT)
        if self.dir.box.is_pending(RequestKind.WORKERS, str(workers)):
            self.dir.box.drop(RequestKind.WORKERS, str(workers))
            raise PoolError(f"the manager did not take the request within {REQUEST_TIMEOUT:g}s")
        serving = self.dir.serving()
        return serving.workers if serving is not None else None

    def kill_grace(self, grace: float | None = None) -> float:
        """The seconds between SIGTERM and SIGKILL a kill asking for ``grace`` gives a job:
        that, or the serving manager's own default (`pool serve --kill-grace`), or pool's."""
        if grace is not None:
            return grace
        serving = self.dir.serving()
        return serving.kill_grace if serving is not None and serving.kill_grace is not None else defaults.KILL_GRACE

    def acted_on(self, job_id: str) -> bool:
        """True when something will carry out a request for the job now: a manager, an
        inline manager, or the process that holds the job."""
        return self.dir.manager_running() or self.dir.locks.is_supervised(job_id) or self.dir.locks.is_leased(job_id)

    def _await_request(self, kind: RequestKind, job_id: str, timeout: float) -> None:
        """Wait (briefly) for the manager to take a request: it removes the file then."""
        self._await_requests(kind, [job_id], timeout)

    def _await_requests(self, kind: RequestKind, job_ids: Collection[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(job_ids)
        while True:
            if len(pending) > 1:  # one listing of requests/, not a look per request
                on_file = set(self.dir.box.folder.listdir())
                pending = [job_id for job_id in pending if f"{kind.value}-{job_id}" in on_file]
            else:
                pending = [job_id for job_id in pending if self.dir.box.is_pending(kind, job_id)]
            if not pending or time.monotonic() >= deadline:
                return
            time.sleep(POLL_INTERVAL / 5)

    def _apply_without_manager(self, kind: RequestKind, job_id: str, change: Any) -> None:
        """No manager serves the spool: a change to a job nothing runs is made here."""
        if self.dir.locks.is_supervised(job_id):
            return  # its inline manager carries the request out
        try:
            written = self._ledger().change(job_id, change, wait=0.5)
        except (JobBusy, JobNotFound, PermissionError):
            return  # held by a dead manager's worker, or not ours to write: the next manager
        if written is not None:
            self.dir.box.drop(kind, job_id)

    def _take_back(self, job_id: str) -> bool:
        """Cancel a job no manager has taken in yet: its file is taken back (unless a
        manager claims it first: a claim is a rename, so exactly one of the two wins) and
        it gets a cancelled status, so it is accounted for like any other job. False when
        there is no such file, or its status could not be written here (a shared spool's
        member may not write statuses: her request is carried out by the manager)."""
        name = f"{job_id}.json"
        try:
            queued = self._submitted_status(job_id)
        except JobNotFound:
            return False
        if not os.access(self.dir.status_dir, os.W_OK) or not self.dir.drop.folder.unlink(name):
            return False
        self._ledger().create(queued, "accepted")
        self._ledger().change(job_id, lifecycle.cancel_if_queued(utc_now(), "cancelled before any manager took it in"))
        return True
