"""Looking at jobs: ``pool status`` (table, detail, JSON), its live form ``--watch`` /
``pool top``, and the live view ``pool wait`` and ``submit --wait`` follow jobs with."""

from __future__ import annotations

import contextlib
import fnmatch
import gc
import itertools
import os
import select as selecting
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import timedelta
from typing import Any

import click
import orjson

from pool.client import Job, Spool
from pool.errors import WaitTimeout
from pool.finding import Brief
from pool.model import UNDER_WAY, JobStatus, State, parse_time
from pool.usage import Sample, cpu_percent, sample_groups

from .commands import StrictCommand
from .common import Duration, complete_ids, console, now, say_no_manager

WATCH_INTERVAL = 0.5
JSON_PIECE = 1024  # documents written at a time by --json


def matches(status: JobStatus, states: tuple[str, ...], name: str | None, since: float | None) -> bool:
    if states and status.state.value not in states:
        return False
    if name is not None and not (fnmatch.fnmatchcase(status.spec.name, name) or fnmatch.fnmatchcase(status.id, name)):
        return False
    return since is None or parse_time(status.created_at) >= now() - timedelta(seconds=since)


def brief_matches(brief: Brief, name: str | None, since: float | None) -> bool:
    """``matches``, on what a brief holds (its state is already chosen)."""
    if name is not None and not (fnmatch.fnmatchcase(brief.name, name) or fnmatch.fnmatchcase(brief.id, name)):
        return False
    if since is None:
        return True
    try:
        return parse_time(brief.created_at) >= now() - timedelta(seconds=since)
    except ValueError:
        return False  # not a time (checked when its index line was written, not when read)


def select(spool: Spool, ids: tuple[str, ...], states: tuple[str, ...] = (), name: str | None = None,
           since: float | None = None, cache: dict[str, tuple[int, JobStatus]] | None = None) -> list[JobStatus]:
    statuses = [spool.status(i) for i in ids] if ids else spool.statuses(cache=cache)
    return [s for s in statuses if matches(s, states, name, since)]


REJECTED = "rejected"  # not a state: files refused at intake, listed with their reasons
FILTERS = [
    click.option("--state", "states", multiple=True, type=click.Choice([s.value for s in State] + [REJECTED]),
                 help="Only jobs in this state (repeatable: in any of them; rejected: files refused at intake, "
                      "with why)."),
    click.option("--name", "name_pattern", metavar="PATTERN", help="Only jobs whose name or id matches (* and ?)."),
    click.option("--since", type=Duration(), help="Only jobs created this recently (90s, 15m, 1h, 7d)."),
    click.option("--limit", type=click.IntRange(0), default=100, show_default=True,
                 help="Show at most this many jobs, newest first (0: all)."),
]


def with_filters(command: Any) -> Any:
    for option in reversed(FILTERS):
        command = option(command)
    return command


@click.command(cls=StrictCommand)
@click.argument("ids", nargs=-1, shell_complete=complete_ids)
@with_filters
@click.option("--json", "as_json", is_flag=True,
              help="A JSON array of status objects: every job that matches (--limit is the table's).")
@click.option("--watch", is_flag=True, help="Refresh in place until q or Ctrl-C (as `pool top`).")
@click.option("--usage", is_flag=True,
              help="CPU and RSS columns: a running job's now, an ended one's last attempt's (CPU time, peak).")
@click.pass_obj
def status(spool: Spool, ids: tuple[str, ...], states: tuple[str, ...], name_pattern: str | None,
           since: float | None, limit: int, as_json: bool, watch: bool, usage: bool) -> None:
    """Show jobs: a table with progress bars; one ID shows the detail view."""
    ids = tuple(map(spool.resolve, ids))
    if REJECTED in states:
        if len(set(states)) > 1:
            raise click.UsageError("--state rejected lists refused files, not jobs: give it alone")
        show_rejections(spool, since, as_json)
        return
    if watch:
        watch_table(spool, ids, states, name_pattern, since, limit, usage=usage)
        return
    # One listing, then the process ends: the collector, given back after it, would walk
    # each of its objects once more (a tenth of a table over a million jobs) to free none.
    gc.disable()
    if as_json:
        write_json(spool, ids, states, name_pattern, since)
        return
    from . import render

    if len(ids) == 1:  # plain lines: no table, so rich is not imported (benchmarks/cli_start.py)
        job = spool.status(ids[0])
        tail = Job(spool, job.id).logs().splitlines()[-10:]
        lines = render.detail_lines(job, now(), spool.events(job.id), tail, orphaned(spool, [job]),
                                    spool.paused_for([job]).get(job.id, 0.0), spool.dir.checkpoints.saved(job.id))
        click.echo("\n".join(lines).translate(CURSOR_MOVES))
        return
    out = console()
    listed: Sequence[JobStatus | Brief]
    if ids:
        listed = statuses = select(spool, ids, states, name_pattern, since)
        shown = statuses[:limit] if limit else statuses
    else:  # every job is counted, but only those shown are decoded and checked (pool.finding.Brief)
        listed = briefs = [b for b in spool.briefs(states) if brief_matches(b, name_pattern, since)]
        shown = spool.decoded(briefs[:limit] if limit else briefs)
    lost = orphaned(spool, listed)
    out.print(render.status_table(shown, now(), lost, width=out.width if out.is_terminal else None,
                                  full_groups=spool.full_groups(listed), paused_for=spool.paused_for(shown),
                                  usage=UsageView().cells(shown) if usage else None))
    out.print(footer(listed, limit, lost, spool.rejected_lately()), style="dim")
    serving = spool.dir.serving()
    if serving is not None and serving.trouble:
        out.print(f"the manager cannot run jobs now: {serving.trouble}", style="bold red", markup=False)
    if serving is not None and serving.stopping:
        out.print(f"the manager is stopping ({serving.stopping}): nothing new starts", style="yellow", markup=False)
    if not spool.dir.manager_running() and any(not s.state.is_final and not spool.acted_on(s.id) for s in listed):
        say_no_manager(spool, "queued jobs wait until `pool serve` runs")


# What a job's own text (its message, its output's last lines) may hold that would ring or
# move the terminal's cursor over the view: dropped, as rich drops them from a table.
CURSOR_MOVES = dict.fromkeys((0x07, 0x08, 0x0B, 0x0C, 0x0D))


def orphaned(spool: Spool, statuses: Sequence[JobStatus | Brief]) -> set[str]:
    """Jobs whose status says running while nothing looks after them (their manager and
    worker were killed): shown as such, not with a progress and an ETA that will never
    move. The next manager runs them again. While a manager serves, it looks after every
    job, wherever its attempt runs; a job whose lock this user cannot look at (a member of
    a shared spool) is never called orphaned: nobody here can know."""
    running = [s for s in statuses if s.state in UNDER_WAY]
    if not running or spool.dir.manager_running():
        return set()
    if not spool.dir.locks.may_see():
        return set()
    leased = spool.dir.locks.leased_ids()
    return {s.id for s in running if s.id not in leased and not spool.acted_on(s.id)}


def show_rejections(spool: Spool, since: float | None, as_json: bool) -> None:
    found = spool.rejections(time.time() - since if since is not None else 0.0)
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(found, option=orjson.OPT_INDENT_2) + b"\n")
        return
    for doc in found:
        click.echo(f"{doc.get('rejected_at')}  rejected/{doc.get('name')}: {doc.get('reason')}")
    click.echo(f"{len(found)} rejected" + ("" if since is None else " in that time"), err=True)


@click.command(cls=StrictCommand)
@with_filters
@click.pass_obj
def top(spool: Spool, states: tuple[str, ...], name_pattern: str | None, since: float | None, limit: int) -> None:
    """A live view of the jobs, refreshed in place until q or Ctrl-C (pool status --watch)."""
    if REJECTED in states:
        raise click.UsageError("--state rejected lists refused files: see `pool status --state rejected`")
    watch_table(spool, (), states, name_pattern, since, limit, usage=True)


def write_json(spool: Spool, ids: tuple[str, ...], states: tuple[str, ...], name: str | None,
               since: float | None) -> None:
    """Machine-clean JSON: the documents as they are on disk, written back byte for byte
    (parsed only for their state and creation time) unless ids, a name or a time are
    asked for, which need the whole job (the fast path over a large spool)."""
    docs: Iterable[bytes]
    if ids or name or since is not None:
        docs = [orjson.dumps(s.to_dict()) for s in select(spool, ids, states, name, since)]
    else:
        docs = spool.documents(states)
    out = sys.stdout.buffer
    out.write(b"[")
    left, joint = iter(docs), b""
    while piece := list(itertools.islice(left, JSON_PIECE)):  # joined whole, 100,000 jobs' took a tenth of the command
        out.write(joint + b",\n".join(piece))
        joint = b",\n"
    out.write(b"]\n")


def footer(statuses: Sequence[JobStatus | Brief], limit: int, lost: set[str], rejected: int = 0) -> str:
    from . import render

    hidden = len(statuses) - limit if limit and len(statuses) > limit else 0
    line = render.summary(statuses, lost) + (f"; {hidden} older not shown (--limit 0 shows all)" if hidden else "")
    if rejected:
        line += f"; {rejected} file(s) rejected in the last day (pool status --state rejected)"
    return line


def sleep_only(seconds: float) -> bool:
    time.sleep(seconds)
    return False


@contextlib.contextmanager
def keys_typed() -> Iterator[Callable[[float], bool]]:
    """On a terminal, a pause that ends early, and says True, when q is typed (as in top
    and less); the terminal reads keys one at a time, not echoed, until the view ends."""
    fd = sys.stdin.fileno() if sys.stdin is not None else -1
    if fd < 0 or not os.isatty(fd):
        yield sleep_only
        return
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def pause(seconds: float) -> bool:
        if selecting.select([fd], [], [], seconds)[0]:
            return b"q" in os.read(fd, 64).lower()
        return False

    try:
        yield pause
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def watch_table(spool: Spool, ids: tuple[str, ...], states: tuple[str, ...] = (), name: str | None = None,
                since: float | None = None, limit: int = 100, until_final: bool = False,
                timeout: float | None = None, usage: bool = False) -> list[JobStatus]:
    """A live table, refreshed in place, until Ctrl-C (or until every job is final; or,
    when it is not waiting for that, until q is typed at its terminal); with ``usage``,
    the CPU and RSS of each job."""
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    from . import render

    out = console()
    used = UsageView() if usage else None

    def view(statuses: list[JobStatus]) -> Group:
        shown = statuses[:limit] if limit else statuses
        # What fits the screen (header, footer and the "more" line aside): running first.
        shown, more = render.fit(shown, max(1, out.size.height - 3)) if out.is_terminal else (shown, 0)
        lost = orphaned(spool, statuses)
        return Group(render.status_table(shown, now(), lost, more=more, width=out.width if out.is_terminal else None,
                                         full_groups=spool.full_groups(statuses),
                                         paused_for=spool.paused_for(shown),
                                         usage=used.cells(shown) if used is not None else None),
                     Text(footer(statuses, limit, lost), style="dim", no_wrap=True, overflow="ellipsis"))

    deadline = None if timeout is None else time.monotonic() + timeout
    cache: dict[str, tuple[int, JobStatus]] = {}  # a refresh parses only what changed
    statuses = select(spool, ids, states, name, since, cache)
    try:
        # Keys are read one at a time before anything is shown: a q typed on sight counts.
        with (contextlib.nullcontext(sleep_only) if until_final else keys_typed()) as pause, \
                Live(view(statuses), console=out, refresh_per_second=4) as live:
            while not (until_final and statuses and all(s.state.is_final for s in statuses)):
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(f"jobs not finished after {timeout:g}s")
                if pause(WATCH_INTERVAL):
                    break
                statuses = select(spool, ids, states, name, since, cache)
                live.update(view(statuses))
    except KeyboardInterrupt:
        if until_final:
            raise
    return statuses


class UsageView:
    """The CPU and RSS cells of jobs, look after look: a running job's read from /proc for
    its process group (its CPU % over the time since the last look), an ended job's as its
    last attempt recorded."""

    def __init__(self) -> None:
        self.before: dict[int, Sample] = {}

    def cells(self, statuses: Sequence[JobStatus]) -> dict[str, tuple[str, str]]:
        from . import render

        groups = {s.pid for s in statuses if s.state in UNDER_WAY and s.pid}
        samples = sample_groups(groups) if groups else {}
        cells = {}
        for s in statuses:
            live = None
            if s.state in UNDER_WAY and s.pid and (sample := samples.get(s.pid)) is not None:
                live = (cpu_percent(self.before.get(s.pid), sample), sample.rss)
            shown = render.usage_cells(s, live)
            if shown is not None:
                cells[s.id] = shown
        self.before = samples
        return cells


def follow(spool: Spool, ids: list[str], timeout: float | None, quiet: bool, to_stderr: bool = False,
           interruptible: bool = True) -> int:
    """Wait for the jobs to be final (live on a terminal), say how each ended (on stderr
    with ``to_stderr``); 0 when all are done, else 1. Ctrl-C stops the waiting, not the
    jobs: it says how to stop them, and exits 130 (``interruptible=False``: KeyboardInterrupt
    is the caller's). Raises WaitTimeout, JobNotFound."""
    try:
        if quiet or not console().is_terminal:
            statuses = spool.wait(ids, timeout)
        else:
            statuses = watch_table(spool, tuple(ids), until_final=True, limit=0, timeout=timeout)
    except KeyboardInterrupt:
        if not interruptible:
            raise
        if not quiet:
            click.echo(f"\nstopped waiting; {', '.join(ids)} {'keeps' if len(ids) == 1 else 'keep'} running "
                       f"(stop with: pool kill {' '.join(ids)})", err=True)
        sys.exit(130)
    if not quiet:
        for s in statuses:
            error = f" ({s.error_text})" if s.error and s.state is not State.DONE else ""
            click.echo(f"{s.id}: {s.state.value}{error}", err=to_stderr)
    return 0 if statuses and all(s.state is State.DONE for s in statuses) else 1
