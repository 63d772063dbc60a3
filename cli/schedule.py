"""``pool schedule``: jobs that fire on a cron line or every so long (a thin shell over
``Spool.schedule`` and its kin, pool/scheduled.py)."""

from __future__ import annotations

from typing import Any

import click
import orjson

from pool.client import ScheduleInfo, Spool
from pool.schedules import CATCH_UPS, OVERLAPS

from .commands import JobCommand, StrictCommand
from .jobargs import ARGV_AFTER_OPTIONS, describe_job, firing_options

NAME_FIRST = "give the schedule's name first: pool schedule add NAME --every 15m -- TASK ARGS..."


class NameFirstCommand(JobCommand):
    """`pool schedule add NAME [OPTIONS] [--] TASK|ARGV...`: the name, then the options,
    then the job's own arguments (which may look like options)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-"):
            ctx.meta["schedule_name"] = args[0]
            args = args[1:]
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return ["NAME", *super().collect_usage_pieces(ctx)]


EXAMPLES = """\b
Examples:
  pool schedule add nightly --cron '0 3 * * *' --tz Europe/Madrid -- mytasks:backup /data
  pool schedule add poll --every 15m --command -- ./fetch.sh
  pool schedule list                 next run, last job and its state
  pool schedule run nightly          fire it now, once"""


@click.group(cls=click.Group, epilog=EXAMPLES)
def schedule() -> None:
    """Jobs that fire on a cron line or every so long: each firing is an ordinary job,
    named after the schedule and its slot (nightly-20261129T0300)."""


@schedule.command("add", cls=NameFirstCommand, context_settings=ARGV_AFTER_OPTIONS)
@click.argument("args", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--cron", metavar="LINE", help="A cron line: '0 3 * * *' is 03:00 every day (needs spoolpool[cron]).")
@click.option("--every", metavar="DURATION", help="Every 30s, 15m, 2h, 1d (counted from 00:00 UTC).")
@click.option("--tz", metavar="ZONE", help="The cron line's time zone, as Europe/Madrid (default: local time).")
@click.option("--catch-up", "catch_up", type=click.Choice(CATCH_UPS), default=CATCH_UPS[0], show_default=True,
              help="Slots missed while no manager ran: fire the latest, none, or all (at most 100).")
@click.option("--overlap", type=click.Choice(OVERLAPS), default=OVERLAPS[0], show_default=True,
              help="A slot due while the last firing still runs: skip it, queue it after, or allow both.")
@click.option("--replace", "replace_existing", is_flag=True, help="Replace a schedule of that name.")
@firing_options
@click.pass_context
def add(ctx: click.Context, /, args: tuple[str, ...], is_command: bool, cron: str | None, every: str | None,
        tz: str | None, catch_up: str, overlap: str, replace_existing: bool, **job: Any) -> None:
    """Add schedule NAME: fire TASK ARGS (or --command ARGV) on a cron line or every so
    long, until removed. A command runs in this directory with the manager's environment
    (and --env)."""
    name = ctx.meta.get("schedule_name")
    if name is None:
        raise click.UsageError(NAME_FIRST, ctx)
    if (cron is None) == (every is None):
        raise click.UsageError("give --cron LINE or --every DURATION (one of them)", ctx)
    spool: Spool = ctx.obj
    doc = describe_job(args, is_command, **job)
    when: dict[str, Any] = {"cron": cron, "every": every, "tz": tz, "catch_up": catch_up, "overlap": overlap,
            "replace_existing": replace_existing}
    if is_command:
        added = spool.schedule_command(name, doc.pop("command"), **when, **doc)
    else:
        added = spool.schedule(name, doc.pop("task"), *doc.pop("args"), kwargs=doc.pop("kwargs"), **when, **doc)
    info = spool.schedule_info(added.name)
    click.echo(f"schedule {added.name}: {added.when}, next at {shown_time(info)}")


@schedule.command("list", cls=StrictCommand)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per schedule.")
@click.pass_obj
def list_(spool: Spool, as_json: bool) -> None:
    """Every schedule: when it fires, its next slot, its last job and that job's state."""
    infos = spool.schedules()
    if as_json:
        for info in infos:
            click.echo(orjson.dumps(info_document(info)))
        return
    if not infos:
        click.echo("no schedules (pool schedule add NAME --every 15m -- TASK)", err=True)
        return
    rows = [("NAME", "WHEN", "NEXT", "LAST JOB", "STATE", "FIRED", "SKIPPED")]
    for info in infos:
        if info.schedule is None:
            rows.append((info.name, f"bad: {info.problem}", "", "", "", "", ""))
            continue
        record = info.record
        rows.append((info.name, info.schedule.when, shown_time(info),
                     (record.last_job if record else None) or "-",
                     info.last_state.value if info.last_state else "-",
                     str(record.fired if record else 0), str(record.skipped if record else 0)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1])


def shown_time(info: ScheduleInfo) -> str:
    if info.schedule is not None and info.schedule.paused:
        return "paused"
    return info.next_at.strftime("%Y-%m-%d %H:%M:%S") if info.next_at else "never"


def info_document(info: ScheduleInfo) -> dict[str, Any]:
    record = info.record
    return {"name": info.name, "schedule": info.schedule.to_dict() if info.schedule else None,
            "problem": info.problem, "next_at": info.next_at.astimezone().isoformat() if info.next_at else None,
            "last_job": record.last_job if record else None,
            "last_state": info.last_state.value if info.last_state else None,
            "through": record.through if record else None, "fired": record.fired if record else 0,
            "skipped": record.skipped if record else 0}


@schedule.command("remove", cls=StrictCommand)
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def remove(spool: Spool, names: tuple[str, ...]) -> None:
    """Remove schedules; the jobs they fired stay."""
    for name in names:
        spool.remove_schedule(name)
        click.echo(f"schedule {name} removed")


@schedule.command("run", cls=StrictCommand)
@click.argument("name")
@click.pass_obj
def run_now(spool: Spool, name: str) -> None:
    """Fire the schedule now, once (its slots stay as they are); prints the job's id."""
    click.echo(spool.run_schedule(name).id)


@schedule.command("pause", cls=StrictCommand)
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def pause(spool: Spool, names: tuple[str, ...]) -> None:
    """Fire nothing until resumed; slots passing meanwhile are skipped, not caught up."""
    for name in names:
        spool.pause_schedule(name)
        click.echo(f"schedule {name} paused")


@schedule.command("resume", cls=StrictCommand)
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def resume(spool: Spool, names: tuple[str, ...]) -> None:
    """Fire again, from the next slot on."""
    for name in names:
        info = spool.schedule_info(spool.pause_schedule(name, paused=False).name)
        click.echo(f"schedule {name} resumed, next at {shown_time(info)}")
