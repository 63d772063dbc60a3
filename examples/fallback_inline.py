"""subprocess stays the fallback: with no manager running, Spool.run_command runs the
same argv at once, in a process of its own, and still tracks it (status, log, events),
so `pool status` and `pool logs` show it like any job. With a manager, it goes through it.

    python examples/fallback_inline.py
"""

import sys
from pathlib import Path

import pool

RENDER = [str(Path(__file__).with_name("render.sh")), "5", "0.05"]

if __name__ == "__main__":
    spool = pool.Spool()  # --spool / POOL_SPOOL / ./spool
    try:
        status = spool.run_command(RENDER, name="render (inline fallback)")
    except pool.JobFailed as failure:
        print(f"failed: {failure}")
        sys.exit(1)
    print(f"{status.id}: {status.state.value}, progress {status.progress:.0%}, last output: {status.message}")
