"""``pool group``: jobs that share a limit of their own (a thin shell over
``Spool.set_group`` and ``Spool.groups``, pool/grouped.py)."""

from __future__ import annotations

import dataclasses

import click
import orjson

from pool.client import Spool
from pool.requests import MAX_WORKERS

from .commands import StrictCommand

EXAMPLES = """\\b
Examples:
  pool group set gpu --parallel 1      at most one gpu job at a time
  pool submit --group gpu mytasks:train 7
  pool group list                      each group: limit, paused, running, queued, waiting
  pool pause --group gpu               start no more gpu jobs (pool resume --group gpu)"""


@click.group(epilog=EXAMPLES)
def group() -> None:
    """Jobs with a limit of their own ("group": "gpu"): at most N of them run at once,
    and a full group never holds back the jobs of another."""


@group.command("set", cls=StrictCommand)
@click.argument("name")
@click.option("--parallel", type=click.IntRange(1, MAX_WORKERS), help="At most this many of its jobs at once.")
@click.option("--no-limit", is_flag=True, help="No limit of its own: as many as the workers run.")
@click.pass_obj
def set_(spool: Spool, name: str, parallel: int | None, no_limit: bool) -> None:
    """Set group NAME's limit; kept in the spool (groups/NAME.json), so a restart keeps it."""
    if (parallel is None) == (not no_limit):
        raise click.UsageError("give --parallel N or --no-limit (one of them)")
    settings = spool.set_group(name, parallel)
    click.echo(f"group {name}: " + (f"at most {settings.parallel} at a time" if settings.parallel
                                    else "no limit of its own"))


@group.command("list", cls=StrictCommand)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per group.")
@click.pass_obj
def list_(spool: Spool, as_json: bool) -> None:
    """Every group with settings or with jobs not ended (``default``: the jobs with no
    group): its limit, whether it is paused, and its jobs running (paused ones included),
    queued (sent ahead to a worker included) and waiting."""
    infos = spool.groups()
    if as_json:
        for info in infos:
            click.echo(orjson.dumps(dataclasses.asdict(info)))
        return
    if not infos:
        click.echo("no groups (pool group set NAME --parallel N; pool submit --group NAME ...)", err=True)
        return
    rows = [("GROUP", "LIMIT", "PAUSED", "RUNNING", "QUEUED", "WAITING")]
    rows += [(i.name, f"bad: {i.problem}" if i.problem else str(i.parallel or "-"), "yes" if i.paused else "-",
              str(i.running), str(i.queued), str(i.waiting)) for i in infos]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@group.command("remove", cls=StrictCommand)
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def remove(spool: Spool, names: tuple[str, ...]) -> None:
    """Remove groups' limits (their jobs stay, bounded by the workers only)."""
    for name in names:
        click.echo(f"group {name}: " + ("limit removed" if spool.remove_group(name) else "had no limit"))
