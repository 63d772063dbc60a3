"""The ``pool`` command: a thin click shell over ``pool.Spool`` and the manager.

Domain errors become one line on stderr and exit 1 here, in one place (PoolGroup);
usage errors are click's, exit 2. Nothing below prints a traceback.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import Any

import click
import orjson

from pool import defaults
from pool.client import Job, Spool, default_spool_path
from pool.errors import JobNotFinished, JobNotFound, NoManagerWarning, PoolError, WaitTimeout
from pool.joblog import HEAD_BYTES
from pool.model import UNDER_WAY, JobStatus, State

from .commands import JobCommand, StrictCommand
from .common import complete_ids, follow_log, read_log, say_no_manager
from .jobargs import ARGV_AFTER_OPTIONS, build_job, job_options, when_options

KILL_AT_ONCE = 1.0  # seconds a kill usually takes: `pool kill` says it waits only past this
KILL_SLACK = 30.0  # seconds a kill may take beyond its grace (a loaded machine), before `pool kill` gives up

# Commands that read an existing spool: with none, they say so instead of showing nothing.
NEEDS_SPOOL = {"submit", "status", "top", "kill", "wait", "retry", "restart", "remove", "logs", "result", "prune",
               "stop", "workers", "schedule", "group", "pause", "resume", "web"}


def spool_option(needs_spool: bool) -> click.Option:
    """``--spool`` after the subcommand too (`pool status --spool DIR`)."""

    def use(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is not None:
            ctx.obj = Spool(value)
        if needs_spool and not ctx.resilient_parsing and not ctx.obj.dir.exists():
            raise PoolError(f"no spool at {ctx.obj.path} (start `pool serve`, or pass --spool)")

    return click.Option(["--spool"], metavar="DIR", expose_value=False, callback=use,
                        type=click.Path(file_okay=False), help="The spool directory (as `pool --spool DIR`).")


# Commands whose modules are imported only when the command line names them (click's lazy
# group): `pool status ID`, or `pool submit` in a script's loop, does not pay for the
# manager's, the dashboard's or a worker's imports (benchmarks/cli_start.py).
ELSEWHERE = {"serve": "serve", "status": "views", "top": "views", "run": "run", "prune": "housekeeping",
             "stop": "housekeeping", "workers": "housekeeping", "service": "service", "demo": "demo",
             "schedule": "schedule", "group": "group", "web": "web", "worker": "worker"}
RENAMED = {"restart": "retry"}  # a second name for a command: its help is the first name's

# `pool --help` lists commands by what one does first, not alphabetically.
SECTIONS = [
    ("Start here", ["demo", "run", "serve", "submit", "status"]),
    ("Follow and control jobs", ["top", "web", "wait", "logs", "result", "kill", "pause", "resume", "retry",
                                 "restart", "schedule", "group"]),
    ("The spool and its manager", ["remove", "prune", "stop", "workers", "service", "worker"]),
]
SHORT_HELP = {
    "demo": "See it work: a scratch spool, example jobs, a live view.",
    "run": "Run a task, or -- a program, to its end with a live progress bar.",
    "serve": "Run the manager, which runs the spool's jobs (foreground).",
    "submit": "Queue a task, or --command a program; prints its id.",
    "status": "Every job with its state and progress; with an ID, all of it.",
    "top": "A live view of the jobs (q quits).",
    "web": "A dashboard in the browser: live progress, logs, actions (the web extra).",
    "wait": "Block until jobs have ended; exit 0 if all are done.",
    "logs": "A job's output, every attempt (-f follows it).",
    "result": "A job's result as JSON; exit 1 unless it is done.",
    "kill": "Cancel jobs; a running one's whole process group is stopped.",
    "pause": "Pause jobs: a running one is stopped where it is (SIGSTOP), one not started is held.",
    "resume": "Resume paused jobs, or let held ones start.",
    "retry": "Run jobs that have ended again, from attempt 1.",
    "schedule": "Jobs that fire on a cron line or every so long: add, list, run, pause.",
    "group": "Limits of their own for groups of jobs: set, list, remove.",
    "remove": "Forget jobs: their status, lock and log files go.",
    "prune": "Remove jobs that ended longer ago than --older-than.",
    "stop": "Stop the manager (--drain and --detach keep running work).",
    "workers": "How many jobs run at a time; N changes it with no restart.",
    "service": "A systemd unit that runs `pool serve` for this spool.",
    "worker": "Run a hub's jobs on this machine (pool serve --engine celery; the celery extra).",
}
EXAMPLES = """\b
Examples:
  pool demo                                  see it work (a scratch spool, example jobs)
  pool run -- ffmpeg -i in.mp4 out.webm      run a program with a live progress bar
  pool serve --tasks mytasks --allow-commands &
  pool submit mytasks:render 42              queue a job for that manager; prints its id
  pool status                                every job: state, progress, ETA
  pool kill ID                               stop one (its whole process group)"""


class PoolGroup(click.Group):
    """Maps every error pool raises on purpose (and OS errors) to one clear line."""

    command_class = StrictCommand

    def list_commands(self, ctx: click.Context) -> list[str]:
        known = set(self.commands) | set(ELSEWHERE)
        listed = [name for _, names in SECTIONS for name in names]
        return [n for n in listed if n in known] + sorted(known - set(listed))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in ELSEWHERE:
            module = importlib.import_module(f"{__package__}.{ELSEWHERE[cmd_name]}")
            self.add_command(finished(getattr(module, cmd_name)))
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        for title, section in SECTIONS:
            shown = [n for n in names if n in section or (title == SECTIONS[-1][0] and
                                                        all(n not in other for _, other in SECTIONS))]
            rows = [(n, SHORT_HELP.get(n) or SHORT_HELP[RENAMED[n]]) for n in shown]
            with formatter.section(title):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise SystemExit(130) from None  # as a shell reports Ctrl-C (click would say exit 1)
        except PoolError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from None


@click.group(cls=PoolGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXAMPLES)
@click.option("--spool", "spool_path", envvar="POOL_SPOOL", default="spool", show_default=True,
              type=click.Path(file_okay=False), help="The spool directory (env POOL_SPOOL).")
@click.version_option(package_name="spoolpool")
@click.pass_context
def cli(ctx: click.Context, spool_path: str) -> None:
    """Background jobs with tracking for one machine: a spool directory is the whole database."""
    ctx.obj = Spool(spool_path or default_spool_path())


# ---------------------------------------------------------------- submit
@cli.command(cls=JobCommand, context_settings=ARGV_AFTER_OPTIONS)
@click.argument("args", nargs=-1, required=True, type=click.UNPROCESSED)
@job_options
@when_options
@click.option("--wait", "wait_", is_flag=True, help="Follow the job until it ends; exit 1 unless it is done.")
@click.option("--quiet", "-q", is_flag=True, help="With --wait: print nothing, the exit code says it.")
@click.pass_obj
def submit(spool: Spool, /, args: tuple[str, ...], is_command: bool, wait_: bool, quiet: bool, **options: Any) -> None:
    """Submit TASK [ARGS]... (each ARG is JSON when it parses), or --command ARGV...

    Options come first: everything from TASK or the program on is the job's own, as with
    pueue add or tsp (`pool submit --command ls -q` runs `ls -q`). A command runs in this
    directory with this environment, as subprocess.run would from here."""
    job = build_job(spool, args, is_command, None, **options)
    if spool.dir.manager_running():
        spool.verdict(job.id)  # a refusal is said here, not found later in rejected/
    elif not quiet:
        say_no_manager(spool, "the job waits in incoming/ until `pool serve` runs")
    if not (wait_ and quiet):
        click.echo(job.id)
    if wait_:
        from .views import follow

        sys.exit(follow(spool, [job.id], None, quiet))


# ---------------------------------------------------------------- kill, wait, retry, logs
def statuses_of(spool: Spool, ids: tuple[str, ...]) -> list[JobStatus]:
    """The jobs named (a unique start of an id will do): an unknown, rejected or
    ambiguous id fails before anything is done to any of them."""
    return [spool.status(spool.resolve(job_id)) for job_id in ids]


@cli.command()
@click.argument("ids", nargs=-1, required=True, shell_complete=complete_ids)
@click.option("--grace", type=click.FloatRange(0),
              help=f"Seconds between SIGTERM and SIGKILL (default: the manager's --kill-grace, "
                   f"{defaults.KILL_GRACE:g} unless changed).")
@click.pass_obj
def kill(spool: Spool, ids: tuple[str, ...], grace: float | None) -> None:
    """Cancel jobs: a queued one never starts, a running one is terminated."""
    for before in statuses_of(spool, ids):
        job_id = before.id
        if before.state.is_final:
            click.echo(f"{job_id}: already {before.state.value}")
            continue
        after = spool.cancel(job_id, grace)
        if not after.state.is_final and spool.acted_on(job_id):
            after = wait_for_kill(spool, job_id, spool.kill_grace(grace))
        if after.state.is_final:
            click.echo(f"{job_id}: {after.state.value}")
        else:
            click.echo(f"{job_id}: cancel requested; the next manager carries it out")


@cli.command()
@click.argument("ids", nargs=-1, shell_complete=complete_ids)
@click.option("--group", "groups", multiple=True, metavar="G",
              help="Start no more jobs of group G (default: those with no group); running ones run on.")
@click.option("--all", "every", is_flag=True, help="Every group: start no more jobs at all.")
@click.option("--stop-running", is_flag=True, help="With --group or --all: pause their running jobs too.")
@click.pass_obj
def pause(spool: Spool, ids: tuple[str, ...], groups: tuple[str, ...], every: bool, stop_running: bool) -> None:
    """Pause jobs: a running one stops where it is (SIGSTOP to its whole process group;
    its timeout clock stops too) until `pool resume`; one not started is held. With
    --group or --all, whole groups start nothing more (kept across restarts)."""
    for name in groups_named(spool, ids, groups, every, stop_running):
        for status in spool.pause_group(name, stop_running):
            click.echo(f"{status.id}: {status.state.value}")
        click.echo(f"group {name}: paused (starts nothing until `pool resume --group {name}`)")
    for before in statuses_of(spool, ids):
        click.echo(f"{before.id}: {said_of(before, spool.pause(before.id))}")


@cli.command()
@click.argument("ids", nargs=-1, shell_complete=complete_ids)
@click.option("--group", "groups", multiple=True, metavar="G",
              help="Start group G's jobs again, and resume its paused ones.")
@click.option("--all", "every", is_flag=True, help="Every group.")
@click.pass_obj
def resume(spool: Spool, ids: tuple[str, ...], groups: tuple[str, ...], every: bool) -> None:
    """Resume paused jobs (SIGCONT), or let held ones start; with --group or --all, whole
    groups start jobs again."""
    for name in groups_named(spool, ids, groups, every):
        for status in spool.resume_group(name):
            click.echo(f"{status.id}: {status.state.value}")
        click.echo(f"group {name}: resumed")
    for before in statuses_of(spool, ids):
        click.echo(f"{before.id}: {said_of(before, spool.resume(before.id))}")


def groups_named(spool: Spool, ids: tuple[str, ...], groups: tuple[str, ...], every: bool,
                 stop_running: bool = False) -> list[str]:
    if not (ids or groups or every):
        raise click.UsageError("give job ids, --group G or --all")
    if every and groups:
        raise click.UsageError("give --group G or --all, not both")
    if stop_running and not (groups or every):
        raise click.UsageError("--stop-running goes with --group or --all")
    return spool.group_names() if every else list(groups)


def said_of(before: JobStatus, after: JobStatus) -> str:
    """What became of a job asked to pause or resume, in a word or few."""
    if after.state is State.WAITING and (after.waits or {}).get("paused"):
        return "held (it starts once resumed)"
    if after.state is before.state and (after.waits or {}) == (before.waits or {}):
        return f"still {after.state.value}" + ("; the next manager carries it out" if not after.state.is_final else "")
    return after.state.value


def wait_for_kill(spool: Spool, job_id: str, grace: float) -> JobStatus:
    """Wait for a kill to be carried out: as long as what carries it out may take (the
    grace the job gets, then SIGKILL), saying so once if it is not done at once."""
    try:
        return spool.wait([job_id], timeout=KILL_AT_ONCE)[0]
    except WaitTimeout:
        click.echo(f"{job_id}: stopping (SIGTERM sent; SIGKILL after {grace:g}s if it does not end)", err=True)
    return spool.wait([job_id], timeout=grace + KILL_SLACK)[0]


@cli.command("wait")
@click.argument("ids", nargs=-1, shell_complete=complete_ids)
@click.option("--all", "every", is_flag=True, help="Every job that has not ended yet (as `pueue wait`).")
@click.option("--timeout", type=click.FloatRange(0), help="Give up after this many seconds (exit 1).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing: the exit code says it.")
@click.pass_obj
def wait_cmd(spool: Spool, ids: tuple[str, ...], every: bool, timeout: float | None, quiet: bool) -> None:
    """Block until the jobs are final (a live view on a terminal); exit 0 if all are done.
    With --all: the jobs not final when it starts (submitted later ones are not waited for)."""
    from .views import follow

    if every == bool(ids):
        raise click.UsageError("give job ids, or --all (not both)")
    if every:
        statuses = [s for s in reversed(spool.statuses()) if not s.state.is_final]
        if not statuses:
            if not quiet:
                click.echo("no job is queued or running")
            return
        if not quiet:  # the jobs were not named: say which they are
            click.echo(f"waiting for {len(statuses)} job(s): {', '.join(s.id for s in statuses)}", err=True)
    else:
        statuses = statuses_of(spool, ids)
    if not quiet and not all(spool.acted_on(s.id) or s.state.is_final for s in statuses):
        say_no_manager(spool, "waiting for one to start")
    sys.exit(follow(spool, [s.id for s in statuses], timeout, quiet))


@cli.command()
@click.argument("job_id", metavar="ID", shell_complete=complete_ids)
@click.pass_obj
def result(spool: Spool, job_id: str) -> None:
    """Print a job's result as JSON; exit 1 (saying why) unless it is done."""
    job_id = spool.resolve(job_id)
    try:
        value = Job(spool, job_id).result()
    except JobNotFinished as exc:
        raise PoolError(f"{exc}; `pool wait {job_id}` waits for it") from None
    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")


@cli.command()
@click.argument("ids", nargs=-1, required=True, shell_complete=complete_ids)
@click.option("--dependants", is_flag=True,
              help="Also run again the jobs its end cancelled (they came after it), down the chain.")
@click.option("--fresh", is_flag=True, help="Remove its checkpoint first: it starts from the beginning.")
@click.pass_obj
def retry(spool: Spool, ids: tuple[str, ...], dependants: bool, fresh: bool) -> None:
    """Run jobs that have ended (done, failed or cancelled) again, from attempt 1, with
    the same arguments, resuming from their last checkpoint (`pool restart` is the same
    command)."""
    statuses = statuses_of(spool, ids)
    for status in statuses:
        if not status.state.is_final:  # said before any job is touched
            raise PoolError(f"job {status.id!r} is {status.state.value}; only a job that has ended can run again")
    for status in statuses:
        again, *after = spool.retried(status.id, dependants, fresh)
        click.echo(f"{again.id}: {again.state.value}")
        for dependant in after:
            click.echo(f"{dependant.id}: {dependant.state.value} (it came after {status.id})")


@cli.command()
@click.argument("ids", nargs=-1, required=True, shell_complete=complete_ids)
@click.pass_obj
def remove(spool: Spool, ids: tuple[str, ...]) -> None:
    """Forget jobs: their status, lock and log files go. A queued job is cancelled first;
    a running one must be killed first (`pool kill`)."""
    statuses = statuses_of(spool, ids)
    for status in statuses:
        if status.state in UNDER_WAY:  # said before any job is touched
            raise PoolError(f"job {status.id!r} is running; stop it first: pool kill {status.id}")
    for status in statuses:
        spool.remove(status.id)
        click.echo(f"{status.id}: removed")


@cli.command()
@click.argument("job_id", metavar="ID", shell_complete=complete_ids)
@click.option("--follow", "-f", is_flag=True, help="Keep printing output until the job ends.")
@click.option("--tail", "-n", type=click.IntRange(0), help="Only the last N lines.")
@click.pass_obj
def logs(spool: Spool, job_id: str, follow: bool, tail: int | None) -> None:
    """Print a job's output (stdout and stderr, every attempt)."""
    job_id = spool.resolve(job_id)
    spool.status(job_id)
    out = sys.stdout.buffer
    data = read_log(spool, job_id)
    shown_up_to, head = len(data), data[:HEAD_BYTES]  # following goes on from what was read
    if tail is not None:
        data = b"".join(data.splitlines(keepends=True)[-tail:]) if tail else b""
    out.write(data)
    out.flush()
    if not follow:
        return
    follow_log(spool, job_id, offset=shown_up_to, head=head)


def finished(command: click.Command) -> click.Command:
    """A command as the group lists it: its short help, and ``--spool`` after its name."""
    command.short_help = SHORT_HELP[command.name or ""]
    if command.name not in ("demo", "worker"):  # the demo's --spool is its own; a worker has none
        for each in getattr(command, "commands", {}).values() or [command]:  # a group's: each of its commands
            each.params.append(spool_option(command.name in NEEDS_SPOOL))
    return command


for _command in list(cli.commands.values()):
    finished(_command)
cli.add_command(retry, "restart")  # pueue's name for it


def main() -> None:
    # The command line says it in its own words, where people look (say_no_manager).
    warnings.simplefilter("ignore", NoManagerWarning)
    try:
        cli(prog_name="pool")
    except KeyboardInterrupt:
        sys.exit(130)
    except JobNotFound as exc:  # raised outside a command's invoke (shell completion)
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
