"""pool from asyncio: submit, follow, wait for and kill jobs without blocking the loop.

    import pool.aio

    spool = pool.aio.Spool("spool")
    job = await spool.submit("mytasks:render", 42)
    async for status in job.updates():      # each change heard: progress, message,
        print(status.state, status.progress)  # state; the last one is final
    print(await job.result())

What reads or writes a file runs in a thread (``asyncio.to_thread``), never in the
loop; waiting is the process's one watcher (pool/awaiting.py) calling into the loop when
a job's status changes: no poll and no thread per job. A ``pool.Executor``'s futures
work with ``asyncio.wrap_future`` too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from . import client
from .awaiting import Heard, watcher
from .errors import PoolError, WaitTimeout
from .job import result_of
from .model import JobStatus


class Spool:
    """A spool seen from asyncio (``pool.Spool``'s submit and status, awaited)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.sync = client.Spool(path)

    async def submit(self, task: str | Any, *args: Any, kwargs: dict[str, Any] | None = None,
                     **job_options: Any) -> Job:
        """As ``pool.Spool.submit`` (no inline fallback: an async caller awaits a manager)."""
        job = await asyncio.to_thread(self.sync.submit, task, *args, kwargs=kwargs, **job_options)
        return Job(self, job.id)

    async def submit_command(self, argv: Sequence[str], **job_options: Any) -> Job:
        job = await asyncio.to_thread(self.sync.submit_command, argv, **job_options)
        return Job(self, job.id)

    def job(self, job_id: str) -> Job:
        """A handle on job ``job_id`` (whether it exists, its first status says)."""
        return Job(self, job_id)

    async def status(self, job_id: str) -> JobStatus:
        return await asyncio.to_thread(self.sync.status, job_id)


class Job:
    """One job, awaited."""

    def __init__(self, spool: Spool, job_id: str) -> None:
        self.spool = spool
        self.id = job_id

    def __repr__(self) -> str:
        return f"pool.aio.Job({self.id!r})"

    async def status(self) -> JobStatus:
        return await self.spool.status(self.id)

    async def updates(self) -> AsyncIterator[JobStatus]:
        """Each status of the job heard from now on, starting with the one it has; ends
        after a final one. Raises JobNotFound (JobRejected: its file was refused)."""
        loop = asyncio.get_running_loop()
        heard: asyncio.Queue[Heard] = asyncio.Queue()

        def listener(status: Heard) -> bool:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                loop.call_soon_threadsafe(heard.put_nowait, status)
            return isinstance(status, PoolError) or status.state.is_final

        finding = self.spool.sync
        watcher().listen(finding, self.id, listener)
        try:
            while True:
                status = await heard.get()
                if isinstance(status, PoolError):
                    raise status
                yield status
                if status.state.is_final:
                    return
        finally:
            watcher().forget(finding, self.id, listener)

    async def wait(self, timeout: float | None = None) -> JobStatus:
        """The job's final status, once it has one. Raises WaitTimeout, JobNotFound."""
        async def final() -> JobStatus:
            async for status in self.updates():
                if status.state.is_final:
                    return status
            raise AssertionError("updates end with a final status")

        try:
            return await asyncio.wait_for(final(), timeout)
        except asyncio.TimeoutError:
            raise WaitTimeout(f"job {self.id!r} not finished after {timeout:g}s") from None

    async def result(self, timeout: float | None = None) -> Any:
        """Its return value, once it is done. Raises JobFailed (it failed or was
        cancelled), WaitTimeout."""
        return result_of(await self.wait(timeout))

    async def kill(self, grace: float | None = None) -> JobStatus:
        """Cancel it, running or not (``pool kill``); its status once asked."""
        return await asyncio.to_thread(self.spool.sync.cancel, self.id, grace)

    async def logs(self) -> str:
        return await asyncio.to_thread(client.Job(self.spool.sync, self.id).logs)
