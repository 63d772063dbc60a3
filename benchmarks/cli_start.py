"""How long a `pool` command takes as a whole process, against the floor under it.

A script that polls `pool status ID`, or submits with `pool submit` in a loop, pays for a
whole process each time, and most of it is imports. This measures, interleaved round by
round, from a regular (not editable) install in a venv of its own:

- the floor: Python alone, and Python importing click and orjson (the command line's
  own packages, which every command needs);
- `pool --version`, `pool status ID`, `pool status` (a spool of a few jobs),
  `pool logs ID` and `pool submit` (no manager: the job waits in incoming/).

    python benchmarks/cli_start.py --rounds 3 --runs 21
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import in_turn, remove_scratch, scratch_folder, wait_for

REPO = Path(__file__).resolve().parent.parent


def regular_install(folder: Path) -> Path:
    """A venv with pool installed from this checkout as a user would (no editable finder,
    which alone adds tens of milliseconds to every command)."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    subprocess.run([str(folder / "bin" / "pip"), "install", "-q", str(REPO)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return folder / "bin"


def spool_with_an_ended_job(bin_dir: Path, spool: Path) -> str:
    pool = str(bin_dir / "pool")
    serving = subprocess.Popen([pool, "--spool", str(spool), "serve", "--allow-commands", "--workers", "1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (spool / "incoming").is_dir(), 30)
        ids = [subprocess.run([pool, "--spool", str(spool), "submit", "--command", "echo", f"line {n}"],
                              check=True, capture_output=True, text=True).stdout.strip() for n in range(5)]
        subprocess.run([pool, "--spool", str(spool), "wait", *ids], check=True, capture_output=True)
    finally:
        serving.terminate()  # as `pool stop` does, and also before the spool was made
        serving.wait(30)
    return ids[0]


def whole_process_ms(argv: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = (time.perf_counter() - started) * 1000
    if done.returncode != 0 and b"NoManagerWarning" not in done.stderr and b"no manager" not in done.stderr:
        raise SystemExit(f"{argv[0]} failed: {done.stderr.decode(errors='replace')}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=21, help="processes of each command per round")
    options = parser.parse_args()
    scratch = Path(scratch_folder("pool-cli-start-"))
    try:
        bin_dir = regular_install(scratch / "venv")
        python, pool = str(bin_dir / "python"), str(bin_dir / "pool")
        spool = scratch / "spool"
        job_id = spool_with_an_ended_job(bin_dir, spool)
        on_spool = [pool, "--spool", str(spool)]
        commands = {
            "python alone": [python, "-c", "pass"],
            "python: import click, orjson": [python, "-c", "import click, orjson"],
            "pool --version": [pool, "--version"],
            "pool status ID": [*on_spool, "status", job_id],
            "pool status (5 jobs)": [*on_spool, "status"],
            "pool logs ID": [*on_spool, "logs", job_id],
            "pool submit (no manager)": [*on_spool, "submit", "--command", "true"],
        }
        medians: dict[str, list[float]] = {name: [] for name in commands}
        for round_number in range(options.rounds):
            for _ in range(options.runs):  # one of each in turn: a slow second hits every command alike
                for name in in_turn(commands, round_number):
                    medians[name].append(whole_process_ms(commands[name]))
            print(f"round {round_number + 1} done", file=sys.stderr)
        floor = statistics.median(medians["python: import click, orjson"])
        print(f"{'command':<30} {'median ms':>10} {'min-max of rounds':>20} {'over the floor':>15}")
        for name, values in medians.items():
            rounds = [statistics.median(values[r * options.runs:(r + 1) * options.runs])
                      for r in range(options.rounds)]
            median = statistics.median(values)
            print(f"{name:<30} {median:>10.1f} {min(rounds):>9.1f}-{max(rounds):<10.1f} {median - floor:>+14.1f}")
    finally:
        remove_scratch(scratch)


if __name__ == "__main__":
    main()
