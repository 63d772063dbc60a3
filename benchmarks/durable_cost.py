"""What ``pool serve --durable`` costs, against the default, interleaved in one run; and
what a spool on tmpfs (``/dev/shm``: nothing kept across a reboot) gains.

    python benchmarks/durable_cost.py [--rounds 3] [--jobs 2000] [--tmpfs]

Each round runs every mode, in an order that turns round by round: 2,000 tiny jobs in one
``.jsonl`` and as a ``.json`` file each (throughput), and 40 x 100 ms CPU-bound jobs (wall
time, the jobs this project is for), 2 workers. Medians (min-max) and the ratio of each
mode to the default. The fsyncs per job are counted by ``file_ops.py --durable``.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import tempfile
from collections.abc import Iterator

from cpu_efficiency import pool_wall
from harness import in_turn, noop_batch_seconds, noop_files_seconds

MODES = {"default": (), "durable": ("--durable",)}
TMPFS = "/dev/shm"


@contextlib.contextmanager
def spools_in(folder: str | None) -> Iterator[None]:
    """The scratch spools of the benchmark made in ``folder`` (None: where they always
    are), and removed from it after (a spool on tmpfs holds memory)."""
    if folder is None:
        yield
        return
    before, scratch = tempfile.tempdir, tempfile.mkdtemp(prefix="pool-bench-", dir=folder)
    tempfile.tempdir = scratch
    try:
        yield
    finally:
        tempfile.tempdir = before
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--tmpfs", action="store_true", help=f"Also the default mode with the spool in {TMPFS}.")
    args = parser.parse_args()
    modes = {mode: (extra, None) for mode, extra in MODES.items()}
    if args.tmpfs:
        modes["tmpfs"] = ((), TMPFS)
    figures = {"batch": "tiny jobs/s, one .jsonl", "files": "tiny jobs/s, a .json file each",
               "cpu": "40 x 100 ms CPU jobs, wall s"}
    results: dict[str, dict[str, list[float]]] = {mode: {f: [] for f in figures} for mode in modes}
    for round_number in range(args.rounds):
        for mode in in_turn(modes, round_number):
            extra, folder = modes[mode]
            with spools_in(folder):
                results[mode]["batch"].append(args.jobs / noop_batch_seconds(args.jobs, serve_args=extra))
                results[mode]["files"].append(args.jobs / noop_files_seconds(args.jobs, serve_args=extra))
                results[mode]["cpu"].append(pool_wall(40, 0.1, *extra))
        print(f"round {round_number + 1}: " + "; ".join(
            f"{mode} {results[mode]['batch'][-1]:.0f} / {results[mode]['files'][-1]:.0f} jobs/s, "
            f"{results[mode]['cpu'][-1]:.3f} s" for mode in modes), flush=True)
    print(f"\nmedians of {args.rounds} interleaved rounds (min-max)")
    for key, label in figures.items():
        default = results["default"][key]
        said = f"{label:<32} default {statistics.median(default):9.3f} ({min(default):.3f}-{max(default):.3f})"
        for mode in list(modes)[1:]:
            values = results[mode][key]
            ratios = [b / a for a, b in zip(default, values, strict=True)]
            said += (f"  {mode} {statistics.median(values):9.3f} ({min(values):.3f}-{max(values):.3f})  "
                     f"{mode}/default {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})")
        print(said)


if __name__ == "__main__":
    main()
