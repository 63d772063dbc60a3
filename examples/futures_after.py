"""After: the same work through pool.Executor, one line changed. Every call is a job:
`pool status` shows it with its progress while it runs, `pool kill` stops one, and with
a spool of your own (here: $POOL_SPOOL, if set) the results stay after the script ends.

    python examples/futures_after.py            # a private spool, removed at the end
    POOL_SPOOL=spool python examples/futures_after.py
    pool status --spool spool                    # meanwhile, from another terminal
"""

import os

import pool
from futures_work import count_primes

if __name__ == "__main__":
    with pool.Executor(max_workers=2, spool=os.environ.get("POOL_SPOOL")) as ex:
        futures = [ex.submit(count_primes, limit) for limit in (50_000, 100_000, 150_000, 200_000)]
        print(f"jobs {', '.join(f.job_id for f in futures)} in {ex.spool.path}: see them with "
              f"pool status --spool {ex.spool.path}")
        counts = [f.result() for f in futures]
    print(counts)
