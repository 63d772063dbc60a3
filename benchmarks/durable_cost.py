"""What ``pool serve --durable`` costs, against the default, interleaved in one run.

    python benchmarks/durable_cost.py [--rounds 3] [--jobs 2000]

Each round runs both modes, in an order that turns round by round: 2,000 tiny jobs in one
``.jsonl`` and as a ``.json`` file each (throughput), and 40 x 100 ms CPU-bound jobs (wall
time, the jobs this project is for), 2 workers. Medians (min-max) and the ratio durable /
default of each. The fsyncs per job are counted by ``file_ops.py --durable``.
"""

from __future__ import annotations

import argparse
import statistics

from cpu_efficiency import pool_wall
from harness import in_turn, noop_batch_seconds, noop_files_seconds

MODES = {"default": (), "durable": ("--durable",)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    figures = {"batch": "tiny jobs/s, one .jsonl", "files": "tiny jobs/s, a .json file each",
               "cpu": "40 x 100 ms CPU jobs, wall s"}
    results: dict[str, dict[str, list[float]]] = {mode: {f: [] for f in figures} for mode in MODES}
    for round_number in range(args.rounds):
        for mode in in_turn(MODES, round_number):
            extra = MODES[mode]
            results[mode]["batch"].append(args.jobs / noop_batch_seconds(args.jobs, serve_args=extra))
            results[mode]["files"].append(args.jobs / noop_files_seconds(args.jobs, serve_args=extra))
            results[mode]["cpu"].append(pool_wall(40, 0.1, *extra))
        print(f"round {round_number + 1}: " + "; ".join(
            f"{mode} {results[mode]['batch'][-1]:.0f} / {results[mode]['files'][-1]:.0f} jobs/s, "
            f"{results[mode]['cpu'][-1]:.3f} s" for mode in MODES), flush=True)
    print(f"\nmedians of {args.rounds} interleaved rounds (min-max)")
    for key, label in figures.items():
        default, durable = results["default"][key], results["durable"][key]
        ratios = [b / a for a, b in zip(default, durable, strict=True)]
        print(f"{label:<32} default {statistics.median(default):9.3f} ({min(default):.3f}-{max(default):.3f})  "
              f"durable {statistics.median(durable):9.3f} ({min(durable):.3f}-{max(durable):.3f})  "
              f"durable/default {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
