"""After: the same argv, unchanged, as a pool job. The caller gets an id back at once and
can watch its progress, cancel it, or come back after a restart; `pool serve
--allow-commands` runs it (start one, or see `pool run` for running without one).

    POOL_SPOOL=spool python examples/after_pool.py
"""

import sys
import time

import pool
from before_subprocess import RENDER

if __name__ == "__main__":
    spool = pool.Spool()  # --spool / POOL_SPOOL / ./spool
    job = spool.submit_command(RENDER, name="render")
    print(f"submitted {job.id}; the caller is free meanwhile")
    while not (status := job.status()).state.is_final:
        shown = f"{status.progress:.0%}" if status.progress is not None else "starting"
        print(f"  {status.state.value:<8} {shown}", flush=True)
        time.sleep(0.2)
    print(f"{job.id}: {status.state.value}; last output: {job.logs().splitlines()[-1]}")
    sys.exit(0 if status.state is pool.State.DONE else 1)
