"""From asyncio.create_subprocess_exec to pool.aio: the command becomes a job, followed
without blocking the event loop, its progress read from its output.

Before:
    proc = await asyncio.create_subprocess_exec("examples/render.sh", "20", "0.05")
    await proc.wait()

    POOL_SPOOL=spool python examples/asyncio_after.py   # a manager serves the spool:
    pool serve --spool spool --allow-commands            #   (in another terminal)
"""

import asyncio
import os

import pool.aio

HERE = os.path.dirname(os.path.abspath(__file__))


async def main() -> None:
    spool = pool.aio.Spool(os.environ.get("POOL_SPOOL", "spool"))
    job = await spool.submit_command([os.path.join(HERE, "render.sh"), "20", "0.05"])
    async for status in job.updates():  # progress parsed from the script's "NN%" lines
        print(f"{status.state.value} {status.progress or 0:.0%}", flush=True)
    print((await job.status()).state.value)


if __name__ == "__main__":
    asyncio.run(main())
