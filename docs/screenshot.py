"""Make the picture of `pool status` the README shows (docs/status.svg), from a real run:
a manager on a scratch spool runs the demo's jobs, and the table is taken while some run.

    python docs/screenshot.py [OUT.svg]

tests/test_newcomer.py runs it, so the picture stays one pool can draw."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from pool.cli import render
from pool.cli.common import now
from pool.cli.demo import EXPECTED, submit_examples
from pool.client import Spool
from pool.importpath import pool_command
from pool.model import State

WIDTH = 120
PATIENCE = 120.0  # seconds for the moment to come on a loaded machine


def the_moment(spool: Spool) -> bool:
    """Something done, something failed or retried, and renders running part way."""
    statuses = {s.id: s for s in spool.statuses()}
    running = [s for s in statuses.values() if s.state is State.RUNNING and (s.progress or 0) >= 0.3]
    return len(running) >= 2 and any(s.state.is_final for s in statuses.values())


def main() -> None:
    out_path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("status.svg")
    scratch = Path(tempfile.mkdtemp(prefix="pool-screenshot-"))
    spool = Spool(scratch / "spool")
    spool.dir.create()
    manager = subprocess.Popen(pool_command("--spool", str(spool.path), "serve", "--workers", "4", "--tasks",
                                            "pool.demo_tasks", "--allow-commands"),
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + PATIENCE
        while not spool.dir.manager_running():
            if time.monotonic() >= deadline or manager.poll() is not None:
                raise SystemExit("the manager did not start")
            time.sleep(0.05)
        submit_examples(spool, scratch)
        while not the_moment(spool):
            if time.monotonic() >= deadline or manager.poll() is not None:
                raise SystemExit("the jobs never reached the moment to take the picture")
            time.sleep(0.05)
        statuses = sorted(spool.statuses(), key=lambda s: list(EXPECTED).index(s.id))
        console = Console(record=True, width=WIDTH, force_terminal=True, color_system="truecolor", file=io.StringIO())
        console.print("$ pool status", style="bold")
        console.print(render.status_table(statuses, now(), width=WIDTH))
        console.print(render.summary(statuses), style="dim")
        console.save_svg(str(out_path), title="pool status")
    finally:
        manager.terminate()
        manager.wait(timeout=60)
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
