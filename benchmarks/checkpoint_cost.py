"""What a checkpoint costs inside a job: ``pool.checkpoint(state)`` against what a user
writes by hand without pool (pickle to a temp file beside the last one, then
``os.replace``), in the same worker, alternating save by save, so both see the same disk.

    python benchmarks/checkpoint_cost.py [--saves 1000] [--size 4096] [--rounds 3]

Each round is one job of a fresh manager; which way goes first alternates between
rounds. The target (issue 22): a checkpoint of a few KB costs at most 1 ms (p99, in every
round). What checkpointing once a second costs a job is the p50 as a share of that second.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from harness import ScratchManager, percentile, wait_for

TARGET_US = 1000.0


def one_round(saves: int, size: int, by_hand_first: bool) -> dict[str, list[float]]:
    manager = ScratchManager("--workers", "1")
    try:
        by_hand = tempfile.mkdtemp(prefix="by-hand-", dir=manager.spool.parent)
        manager.drop("c.json", {"task": "bench_tasks:checkpoint_costs", "id": "c",
                                "args": [saves, size, by_hand_first, by_hand]})
        status = wait_for(lambda: (d := manager.status("c")) and d["state"] in ("done", "failed") and d,
                          timeout=600, tick=0.05)
        if status["state"] != "done":
            raise RuntimeError(f"the benchmark job failed: {status['error']}")
        return status["result"]  # type: ignore[no-any-return]
    finally:
        manager.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--saves", type=int, default=1000)
    parser.add_argument("--size", type=int, default=4096, help="bytes of state")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    met = True
    for round_number in range(args.rounds):
        costs = one_round(args.saves, args.size, by_hand_first=round_number % 2 == 0)
        ours, theirs = costs["pool"], costs["by_hand"]
        p99 = percentile(ours, 99)
        met = met and p99 <= TARGET_US
        print(f"round {round_number + 1}: pool.checkpoint p50 {statistics.median(ours):.0f} us, p99 {p99:.0f} us; "
              f"by hand p50 {statistics.median(theirs):.0f} us, p99 {percentile(theirs, 99):.0f} us; "
              f"ratio p50 {statistics.median(ours) / statistics.median(theirs):.2f}; once a second costs "
              f"{statistics.median(ours) / 1e4:.4f}% of the job (n={len(ours)} each, {args.size} B)")
    print(f"target p99 <= {TARGET_US:.0f} us in every round: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
