"""pool.aio: the asyncio client (submit, updates, wait, result, kill), and
asyncio.wrap_future on a pool.Executor's futures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

import executor_tasks
import pool
import pool.aio
from conftest import Server, made, state_of, wait_until


def test_updates_follow_a_job_to_its_end_and_result_gives_its_value(spool_dir: Path, serve: Callable[..., Server],
                                                                    tmp_path: Path) -> None:
    serve()
    gate = tmp_path / "gate"

    async def follow() -> tuple[list[tuple[str, float | None]], object]:
        spool = pool.aio.Spool(spool_dir)
        job = await spool.submit("pooltest_tasks:halfway", str(gate))
        seen = []
        async for status in job.updates():
            seen.append((status.state.value, status.progress))
            if status.progress == 0.3:
                gate.touch()  # the job ends once its progress was heard here
        return seen, await job.result()

    seen, result = asyncio.run(follow())
    assert result == "done"
    assert ("running", 0.3) in seen and seen[-1] == ("done", 1.0)
    assert [state for state, _ in seen].count("done") == 1  # nothing after the end


def test_wait_times_out_kill_cancels_and_a_failure_raises_job_failed(spool_dir: Path, serve: Callable[..., Server],
                                                                     tmp_path: Path) -> None:
    serve()

    async def scenario() -> None:
        spool = pool.aio.Spool(spool_dir)
        held = await spool.submit("pooltest_tasks:hold", str(tmp_path / "never"))
        with pytest.raises(pool.WaitTimeout):
            await held.wait(timeout=0.05)
        await held.kill(grace=0)
        final = await held.wait(timeout=60)
        assert final.state is pool.State.CANCELLED
        failing = await spool.submit("pooltest_tasks:fail", "no")
        with pytest.raises(pool.JobFailed, match="no"):
            await failing.result(timeout=60)
        refused = await spool.submit("pooltest_tasks:not_a_task")
        with pytest.raises(pool.JobRejected, match="not_a_task"):
            await refused.wait(timeout=60)

    asyncio.run(scenario())


def test_many_jobs_are_awaited_at_once_and_the_loop_serves_other_work_meanwhile(
        spool_dir: Path, serve: Callable[..., Server]) -> None:
    serve()

    async def scenario() -> tuple[int, bool]:
        spool = pool.aio.Spool(spool_dir)
        jobs = [await spool.submit("pooltest_tasks:add", n, n) for n in range(200)]
        waiting = asyncio.gather(*(job.result(timeout=120) for job in jobs))
        served = await spool.status(jobs[-1].id)  # other work of the loop, while they are awaited
        return sum(await waiting), served.id == jobs[-1].id

    total, served = asyncio.run(scenario())
    assert total == sum(2 * n for n in range(200)) and served


def test_wrap_future_awaits_an_executor_future_and_cancelling_it_cancels_a_job_not_started(tmp_path: Path) -> None:
    gate, marker = tmp_path / "gate", tmp_path / "started"

    async def scenario(ex: pool.Executor) -> None:
        assert await asyncio.wrap_future(ex.submit(executor_tasks.square, 6)) == 36
        running = ex.submit(executor_tasks.started_then_gated, str(marker), str(gate))
        queued = ex.submit(executor_tasks.started_then_gated, str(marker), str(gate))
        wrapped = asyncio.wrap_future(queued)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: wait_until(marker.exists, what="started"))
        wrapped.cancel()
        with pytest.raises(asyncio.CancelledError):
            await wrapped
        # The job's future is cancelled by a callback the loop runs: awaited off the loop.
        await loop.run_in_executor(None, lambda: wait_until(queued.cancelled, what="the job's future cancelled"))
        gate.touch()
        assert await asyncio.wrap_future(running) == running.job_id

    with pool.Executor(max_workers=1) as ex:
        asyncio.run(scenario(ex))
    assert len(marker.read_text().split()) == 1  # the one cancelled never started


def test_a_job_of_a_spool_no_manager_serves_waits_and_is_heard_once_one_does(spool_dir: Path,
                                                                              serve: Callable[..., Server]) -> None:
    made(spool_dir)

    async def scenario() -> object:
        spool = pool.aio.Spool(spool_dir)
        with pytest.warns(pool.NoManagerWarning):
            job = await spool.submit("pooltest_tasks:add", 2, 2)
        assert state_of(spool_dir, job.id) is None  # in incoming/, nobody to take it
        await asyncio.get_running_loop().run_in_executor(None, serve)
        return await job.result(timeout=60)

    assert asyncio.run(scenario()) == 4
