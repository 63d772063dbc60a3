"""Keeping a spool tidy: ``pool prune`` and ``pool stop``."""

from __future__ import annotations

import os
import signal
import time

import click

from pool.client import Spool
from pool.errors import PoolError
from pool.model import State

from .commands import StrictCommand
from .views import Duration


@click.command(cls=StrictCommand)
@click.option("--older-than", "older_than", type=Duration(), required=True,
              help="Remove jobs that finished longer ago than this (90s, 15m, 1h, 7d).")
@click.option("--state", "states", multiple=True, type=click.Choice([s.value for s in State if s.is_final]),
              help="Only jobs that ended this way (repeatable; default: done, failed and cancelled).")
@click.option("--dry-run", is_flag=True, help="Say what would be removed, remove nothing.")
@click.pass_obj
def prune(spool: Spool, older_than: float, states: tuple[str, ...], dry_run: bool) -> None:
    """Remove finished jobs' status, lock and log files (and, without --state, files
    refused into rejected/ and lines of events.jsonl as old). Never touches a job that
    is not final."""
    removed = spool.prune(older_than, {State(s) for s in states} or None, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {len(removed)} job(s)" + (f": {', '.join(removed[:20])}" if removed else ""))
    refused = [] if states else spool.prune_rejected(older_than, dry_run=dry_run)
    if refused:
        click.echo(f"{verb} {len(refused)} rejected file(s): {', '.join(refused[:20])}")
    events = 0 if states else spool.prune_events(older_than, dry_run=dry_run)
    if events:
        click.echo(f"{verb} {events} line(s) of events.jsonl")


@click.command(cls=StrictCommand)
@click.option("--wait/--no-wait", "wait_", default=True, show_default=True, help="Wait until the manager has stopped.")
@click.option("--timeout", type=click.FloatRange(0), default=60.0, show_default=True)
@click.pass_obj
def stop(spool: Spool, wait_: bool, timeout: float) -> None:
    """Ask the running manager to stop gracefully (as SIGTERM does)."""
    pid = spool.dir.serving_pid()  # that very process: never a pid reused since
    if not pid:
        raise PoolError(f"no manager is serving {spool.path}")
    os.kill(pid, signal.SIGTERM)
    if wait_:
        deadline = time.monotonic() + timeout
        while spool.dir.manager_running():
            if time.monotonic() >= deadline:
                raise PoolError(f"the manager (pid {pid}) has not stopped after {timeout:g}s")
            time.sleep(0.05)
    click.echo(f"manager (pid {pid}) {'stopped' if wait_ else 'asked to stop'}")
