"""Keeping a spool tidy, and its manager: ``pool prune``, ``pool stop``, ``pool workers``."""

from __future__ import annotations

import os
import time

import click

from pool.client import Spool
from pool.errors import PoolError
from pool.model import UNDER_WAY, State
from pool.stopping import SIGNAL_FOR, StopMode

from .commands import StrictCommand
from .common import Duration


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
@click.option("--drain", "mode", flag_value=StopMode.DRAIN.value,
              help="Start nothing new, and wait for the running jobs to end, however long they take.")
@click.option("--detach", "mode", flag_value=StopMode.DETACH.value,
              help="Stop now and leave running jobs running: the next `pool serve` takes them over.")
@click.option("--wait/--no-wait", "wait_", default=True, show_default=True, help="Wait until the manager has stopped.")
@click.option("--timeout", type=click.FloatRange(0), default=None,
              help="Give up waiting after this many seconds (default: the manager's grace and kill grace, "
                   "and 30 s more; with --drain, no limit).")
@click.pass_obj
def stop(spool: Spool, mode: str | None, wait_: bool, timeout: float | None) -> None:
    """Stop the manager. Nothing new starts; queued jobs stay queued. Running jobs get
    the manager's grace (`pool serve --grace`) to end, then are stopped and queued again,
    uncounted; --drain waits for them instead, --detach leaves them running."""
    how = StopMode(mode) if mode else StopMode.INTERRUPT
    pid = spool.dir.serving_pid()  # that very process: never a pid reused since
    serving = spool.dir.serving()
    if not pid or serving is None:
        raise PoolError(f"no manager is serving {spool.path}")
    running = [s.id for s in spool.statuses() if s.state in UNDER_WAY]
    one = len(running) == 1
    named = ", ".join(running[:10]) + (", …" if len(running) > 10 else "")
    jobs = f"{len(running)} running job{'' if one else 's'} ({named})"
    grace, kill_grace = serving.grace or 0.0, serving.kill_grace or 0.0
    if not running:
        said = f"stopping the manager (pid {pid})" + (": nothing new starts" if how is StopMode.DRAIN else "")
    elif how is StopMode.DRAIN:
        said = f"draining the manager (pid {pid}): nothing new starts; it stops once {jobs} {'ends' if one else 'end'}"
    elif how is StopMode.DETACH:
        said = f"stopping the manager (pid {pid}) now: {jobs} {'runs' if one else 'run'} on, for the next " \
               "`pool serve` to take over"
    else:
        said = f"stopping the manager (pid {pid}): {jobs} {'gets' if one else 'get'} up to {grace:g}s to end, then " \
               f"{'is' if one else 'are'} stopped and queued again (--drain waits for them, --detach leaves them " \
               "running)"
    os.kill(pid, SIGNAL_FOR[how])
    click.echo(said)
    if wait_:
        if timeout is None and how is not StopMode.DRAIN:
            timeout = grace + kill_grace + STOP_SLACK if how is StopMode.INTERRUPT else STOP_SLACK
        deadline = None if timeout is None else time.monotonic() + timeout
        while spool.dir.manager_running():
            if deadline is not None and time.monotonic() >= deadline:
                raise PoolError(f"the manager (pid {pid}) has not stopped after {timeout:g}s")
            time.sleep(0.05)
    click.echo(f"manager (pid {pid}) {'stopped' if wait_ else 'asked to stop'}")


STOP_SLACK = 30.0  # seconds a stop may take beyond its graces (a loaded machine)


@click.command(cls=StrictCommand)
@click.argument("number", type=click.IntRange(1), required=False)
@click.pass_obj
def workers(spool: Spool, number: int | None) -> None:
    """How many jobs the manager runs at a time; with NUMBER, from now on (no restart:
    more start at once, of fewer none is stopped, the extra ones end with their job).
    Until it stops: `pool serve --workers` is what a restart runs."""
    serving = spool.dir.serving()
    if serving is None:
        raise PoolError(f"no manager is serving {spool.path}")
    if number is None:
        if serving.hosts is None:
            click.echo(f"{serving.workers} workers")
        else:  # the machines of --engine celery
            slots = sum(int(host.get("slots") or 0) for host in serving.hosts)
            capped = serving.workers is not None and serving.workers < slots
            cap = f"; at most {serving.workers} jobs at once (pool workers N)" if capped else ""
            click.echo(f"{len(serving.hosts)} machines, {slots} slots{cap}")
        for host in serving.hosts or ():
            serves = [f"tasks of {m}" for m in host.get("tasks", ())] + (["commands"] if host.get("commands") else [])
            click.echo(f"  {host.get('name')}: {host.get('busy')} of {host.get('slots')} slots busy; "
                       f"runs {', '.join(serves) or 'nothing'}")
        if serving.hosts == []:
            click.echo("  no `pool worker` is connected to the broker")
        return
    now = spool.set_workers(number)
    if now != number:
        raise PoolError(f"the manager refused: it runs {now} workers (only the spool's owner may change that; "
                        "its log says why)")
    click.echo(f"{number} workers from now on (were {serving.workers})")
