"""This checkout against another version of pool, side by side, interleaved in one run.

    python benchmarks/versions.py --other /path/to/other/checkout [--rounds 3] [--jobs 2000]

The other checkout needs its own venv (.venv) with it installed; older versions run as
``python -m cli``, newer ones as ``python -m pool`` (found out by looking). Each round
runs both, in alternating order, and the medians are reported with their ratio: the disk
here swings several times within an hour, so only what ran side by side is compared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from core_latency import started_at_latency
from harness import HERE, in_turn, noop_batch_seconds, noop_files_seconds, percentile, scratch_kept_to_the_end


def command_of(checkout: Path) -> tuple[str, ...]:
    python = str(checkout / ".venv" / "bin" / "python")
    module = "pool" if (checkout / "pool" / "__main__.py").exists() else "cli"
    return (python, "-m", module)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--other", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--latency-jobs", type=int, default=100)
    args = parser.parse_args()
    versions = {"this": ((sys.executable, "-m", "pool"), HERE.parent), "other": (command_of(args.other), args.other)}
    results: dict[str, dict[str, list[float]]] = {v: {"batch": [], "files": [], "p50": [], "p90": []} for v in versions}
    with scratch_kept_to_the_end():  # neither version pays for the removal of the other's files
        for round_number in range(args.rounds):
            for name in in_turn(versions, round_number):
                pool, source = versions[name]
                results[name]["batch"].append(args.jobs / noop_batch_seconds(args.jobs, pool, source))
                results[name]["files"].append(args.jobs / noop_files_seconds(args.jobs, pool, source))
                latencies = started_at_latency(args.latency_jobs, pool, source)
                results[name]["p50"].append(statistics.median(latencies))
                results[name]["p90"].append(percentile(latencies, 90))
            print(f"round {round_number + 1}: " + ", ".join(f"{name} {results[name]['batch'][-1]:.0f}/"
                                                            f"{results[name]['files'][-1]:.0f} jobs/s"
                                                            for name in versions), flush=True)
    print(f"\nmedians of {args.rounds} rounds ({args.jobs} tiny jobs, 2 workers; {args.latency_jobs} drops, 1 worker)")
    for key, label, unit in (("batch", "throughput, one .jsonl", "jobs/s"), ("files", "throughput, .json files",
                             "jobs/s"), ("p50", "drop -> started_at p50", "ms"), ("p90", "drop -> started_at p90", "ms")):
        this, other = statistics.median(results["this"][key]), statistics.median(results["other"][key])
        print(f"{label:<26} this {this:8.2f} {unit:<7} other {other:8.2f} {unit:<7} this/other {this / other:5.2f}")


if __name__ == "__main__":
    main()
