"""``pool demo``: a manager on a scratch spool, a handful of example jobs, a live view."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from pool.client import Spool
from pool.importpath import pool_command as pool_argv
from pool.model import JobStatus, State

from .commands import StrictCommand
from .common import console, now

EXPECTED = {
    "render-1": State.DONE, "render-2": State.DONE, "render-3": State.DONE, "encode": State.DONE, "bar": State.DONE,
    "flaky": State.DONE, "doomed": State.FAILED, "endless": State.CANCELLED, "later": State.DONE,
    "resumable": State.DONE,
}
CRASH_AT = 0.4  # how far the checkpointing job gets before the demo kills its worker


TQDM_LIKE = """
import sys, time
for n in range(101):
    cells = n // 10
    sys.stderr.write(f"\\rupscaling: {n:3d}%|{'#' * cells}{' ' * (10 - cells)}| {n}/100")
    sys.stderr.flush()
    time.sleep(0.05)
sys.stderr.write("\\n")
"""


def submit_examples(spool: Spool, scratch: Path) -> None:
    for frame in (1, 2, 3):
        spool.submit("pool.demo_tasks:render", frame, id=f"render-{frame}", name=f"render frame {frame}",
                     kwargs={"steps": 20 + 10 * frame, "step_seconds": 0.1}, priority=2)
    # A command that knows nothing about pool: its printed percentages become its progress.
    # It comes after render-1 (pool submit --after render-1): a small chain.
    spool.submit_command(["sh", "-c", 'for i in $(seq 1 25); do sleep 0.15; echo "encoding: $((i * 4))%"; done'],
                         id="encode", name="shell script printing NN%", priority=1, after=["render-1"])
    # A tqdm-style bar redrawn in place with \r, as tqdm, pip or curl draw theirs.
    spool.submit_command([sys.executable, "-c", TQDM_LIKE], id="bar", name="a tqdm-style bar (\\r)")
    # Two jobs of a group of one (pool group set net --parallel 1): one at a time.
    spool.set_group("net", 1)
    spool.submit("pool.demo_tasks:flaky", str(scratch / "flaky-marker"), id="flaky", name="flaky network call",
                 retries=2, retry_delay=0.5, group="net")
    spool.submit("pool.demo_tasks:doomed", id="doomed", name="divides by zero", group="net")
    spool.submit("pool.demo_tasks:endless", id="endless", name="runs until killed", priority=1)
    # One that saves a checkpoint each step: the demo kills its worker (kill -9) partway,
    # and its next attempt goes on from its last checkpoint, not from the start.
    spool.submit("pool.demo_tasks:resumable", id="resumable", name="checkpoints, killed -9, resumes",
                 retries=1, retry_delay=0.5)
    # One that waits for its time first (pool submit --in 3s).
    spool.submit("pool.demo_tasks:render", 4, id="later", name="render frame 4, in 3s", delay=3,
                 kwargs={"steps": 10, "step_seconds": 0.1})


@click.command(cls=StrictCommand)
@click.option("--spool", "spool_dir", type=click.Path(file_okay=False),
              help="Run the demo in this spool instead of a temporary one (kept afterwards).")
@click.option("--kill-after", type=float, default=4.0, show_default=True,
              help="Seconds before the demo kills 'endless'.")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Give up after this many seconds.")
def demo(spool_dir: str | None, kill_after: float, timeout: float) -> None:
    """Start a manager on a scratch spool, run example jobs, and show them live."""
    from rich.live import Live

    from . import render

    scratch = Path(tempfile.mkdtemp(prefix="pool-demo-"))
    spool = Spool(spool_dir or scratch / "spool")
    spool.dir.create()
    with open(spool.path / "manager.log", "ab") as manager_log:
        manager = subprocess.Popen(
            pool_argv("--spool", str(spool.path), "serve", "--workers", "4", "--tasks", "pool.demo_tasks",
                      "--allow-commands"),
            stdin=subprocess.DEVNULL, stdout=manager_log, stderr=manager_log)
    out = console()
    statuses = []
    try:
        submit_examples(spool, scratch)
        out.print(f"pool demo: a manager (pid {manager.pid}) serves {spool.path} with 4 workers\n")
        started, killed, crashed = time.monotonic(), False, False
        width = out.width if out.is_terminal else None
        with Live(render.status_table([], now()), console=out, refresh_per_second=8) as live:
            while time.monotonic() - started < timeout:
                statuses = spool.statuses()
                statuses.sort(key=lambda s: list(EXPECTED).index(s.id) if s.id in EXPECTED else 99)
                ended = len(statuses) == len(EXPECTED) and all(s.state.is_final for s in statuses)
                # The last frame drawn now, not at the next tick: the screen ends showing how each ended.
                live.update(render.status_table(statuses, now(), width=width), refresh=ended)
                if ended:
                    break
                if not killed and time.monotonic() - started >= kill_after:
                    spool.cancel("endless", grace=1.0)
                    killed = True
                if not crashed:
                    crashed = crash_worker(statuses)
                if manager.poll() is not None:
                    raise click.ClickException(f"the manager exited early; see {spool.path / 'manager.log'}")
                time.sleep(0.1)
    finally:
        manager.send_signal(signal.SIGTERM)
        manager.wait(timeout=30)
    out.print()
    out.print(render.summary(statuses))
    wrong = [s.id for s in statuses if EXPECTED.get(s.id) is not s.state]
    if len(statuses) < len(EXPECTED) or wrong:
        raise click.ClickException(f"demo jobs did not end as expected: {', '.join(wrong) or 'missing jobs'}")
    pool_command = pool_command_here()
    if spool_dir:
        out.print(f"\nThe spool is kept: try `{pool_command} --spool {spool_dir} status flaky` or `... logs doomed` "
                  "or `... status resumable`.")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
        out.print(f"\nNext: `{pool_command} serve --tasks pool.demo_tasks` in one terminal, "
                  f"`{pool_command} submit pool.demo_tasks:render 7` and `{pool_command} status` in another.")


def crash_worker(statuses: list[JobStatus]) -> bool:
    """kill -9 the worker of the checkpointing job once it is far enough: True once done."""
    job = next((s for s in statuses if s.id == "resumable"), None)
    if job is None or job.state is not State.RUNNING or not job.pid or (job.progress or 0) < CRASH_AT:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(job.pid, signal.SIGKILL)
    return True


def pool_command_here() -> str:
    """How to type `pool` from here: plain when it is on PATH (an activated venv), else
    the script this demo runs from (`.venv/bin/pool`), else through this Python."""
    if shutil.which("pool"):
        return "pool"
    script = Path(sys.argv[0])
    if script.name == "pool" and script.exists():
        return os.path.relpath(script) if not os.path.relpath(script).startswith("..") else str(script)
    return f"{os.path.relpath(sys.executable)} -m pool"
