"""What measuring each attempt's usage costs (pool/usage.py): the work a worker does for
it, a Meter made at the attempt's start and read at its end, against the whole cost of
the cheapest job there is, a do-nothing task, in the same run, round after round.

    python benchmarks/usage_cost.py [--rounds 3] [--jobs 2000] [--meters 20000]

A noop job's cost is a worker's time per job in a batch of ``jobs`` (2 workers: twice the
batch's seconds over its jobs); the meter's is timed in this process, a Python process
like a worker, with its peak reset as a worker's is. Measuring is also a few more bytes
in the job's status and its end event (each under 100). The target (issue 22): at most
1% of a job, in every round. A job that does anything at all costs more, and the share
less.
"""

from __future__ import annotations

import argparse
import statistics
import time

from harness import noop_batch_seconds

from pool.usage import Meter

TARGET = 0.01


def meter_seconds(meters: int) -> float:
    """Seconds a Meter costs an attempt, made and read as a worker does (median of 5 runs)."""
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(meters):
            Meter().read(own_code=True)
        runs.append((time.perf_counter() - started) / meters)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--meters", type=int, default=20000)
    args = parser.parse_args()
    met = True
    for round_number in range(args.rounds):
        per_job = noop_batch_seconds(args.jobs) * 2 / args.jobs
        meter = meter_seconds(args.meters)
        share = meter / per_job
        met = met and share <= TARGET
        print(f"round {round_number + 1}: a noop job costs a worker {per_job * 1e6:.0f} us, measuring it "
              f"{meter * 1e6:.1f} us: {share * 100:.2f}% of the job")
    print(f"target <= {TARGET * 100:.0f}% of a noop job in every round: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
