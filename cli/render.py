"""Statuses to text: tables, progress bars, the detail view. Pure: no I/O, no clock."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from pool.checkpoints import Saved
from pool.limits import Limits, Needs, size_words
from pool.model import JobStatus, State, encode_json, parse_time

if TYPE_CHECKING:  # rich is imported where a table is drawn: the detail view (`pool status ID`) has none
    from rich.table import Table
    from rich.text import Text

STATE_STYLES = {
    State.WAITING: "blue",
    State.QUEUED: "cyan",
    State.RUNNING: "yellow",
    State.PAUSED: "bright_black",
    State.DONE: "green",
    State.FAILED: "red",
    State.CANCELLED: "magenta",
}
EIGHTHS = " ▏▎▍▌▋▊▉"


def progress_bar(fraction: float | None, width: int = 20) -> str:
    """``fraction`` as a bar of ``width`` cells; unknown progress is an empty track."""
    if fraction is None:
        return "·" * width
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    bar = "█" * full + (EIGHTHS[part] if part else "")
    return bar + "·" * (width - len(bar))


def percent(fraction: float | None) -> str:
    return "" if fraction is None else f"{fraction * 100:3.0f}%"


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def usage_cells(status: JobStatus, live: tuple[float | None, int] | None) -> tuple[str, str] | None:
    """A job's CPU and RSS cells: running, what it uses now (``live``: CPU % since the last
    look, None when there was none; bytes resident); ended, what its last attempt used
    (CPU seconds, peak RSS)."""
    if live is not None:
        percent_now, rss = live
        return ("" if percent_now is None else f"{percent_now:.0f}%", size_words(rss, 1))
    if status.usage is not None:
        return f"{status.usage.cpu:.1f}s", size_words(status.usage.max_rss, 1)
    return None


def limits_text(limits: Limits) -> str:
    """``memory 2 GiB, cpu 600 s, nice 10, open files 1024``."""
    said = [f"memory {size_words(limits.memory)}" if limits.memory is not None else "",
            f"cpu {limits.cpu_seconds:g} s" if limits.cpu_seconds is not None else "",
            f"nice {limits.nice}" if limits.nice is not None else "",
            f"open files {limits.open_files}" if limits.open_files is not None else ""]
    return ", ".join(s for s in said if s)


def needs_text(needs: Needs) -> str:
    """``memory 4 GiB, 2 CPUs``."""
    said = [f"memory {size_words(needs.memory)}" if needs.memory else "", f"{needs.cpus:g} CPUs" if needs.cpus else ""]
    return ", ".join(s for s in said if s) or "nothing"


def long_job_lines(status: JobStatus, now: datetime, saved: Saved | None) -> list[str]:
    """The detail view's lines on its limits and needs, its last checkpoint, and what the
    last attempt that ended used."""
    lines = []
    if status.spec.limits:
        lines.append(f"limits:    {limits_text(status.spec.limits)}")
    if status.spec.needs is not None:
        lines.append(f"needs:     {needs_text(status.spec.needs)}")
    if saved is not None:
        at = datetime.fromtimestamp(saved.at, timezone.utc)
        lines.append(f"checkpoint: {at.isoformat(timespec='seconds').replace('+00:00', 'Z')}, "
                     f"{size_words(saved.bytes, 1)} ({duration((now - at).total_seconds())} ago)")
    used = status.usage
    if used is not None:
        lines.append(f"used:      cpu {used.cpu:.2f}s (user {used.user:.2f}s, system {used.system:.2f}s), peak RSS "
                     f"{size_words(used.max_rss, 1)}, wall {used.wall:.2f}s (its last attempt that ended)")
    return lines


def elapsed(status: JobStatus, now: datetime, paused_for: float = 0.0) -> str:
    """How long the job ran (or has been running), its pauses left out; empty when it
    never started."""
    if status.started_at is None:
        return ""
    end = parse_time(status.finished_at) if status.finished_at else now
    return duration((end - parse_time(status.started_at)).total_seconds() - paused_for)


def shown_progress(status: JobStatus) -> float | None:
    return 1.0 if status.state is State.DONE else status.progress


ORPHANED = "orphaned"  # running, says its status; no process runs it (all were killed)


class Listed(Protocol):
    """A job as a summary counts it: a status, or a brief of one (pool.finding.Brief)."""

    @property
    def id(self) -> str: ...

    @property
    def state(self) -> State: ...


def summary(statuses: Iterable[Listed], orphaned: Collection[str] = ()) -> str:
    """``2 running, 1 orphaned, 5 done``: an orphaned job is counted as such, not as running."""
    counts = {state.value: 0 for state in State}
    counts[ORPHANED] = 0
    for status in statuses:
        counts[ORPHANED if status.id in orphaned else status.state.value] += 1
    return ", ".join(f"{n} {name}" for name, n in counts.items() if n) or "no jobs"


STALLED_AFTER = 120.0  # seconds without a progress update before a running job is flagged


def seconds_since(text: str | None, now: datetime) -> float | None:
    return None if text is None else (now - parse_time(text)).total_seconds()


def ran_for(status: JobStatus, now: datetime, paused_for: float = 0.0) -> float | None:
    """Seconds the running attempt has run, its pauses left out."""
    since = seconds_since(status.started_at, now)
    return None if since is None else since - paused_for


def eta(status: JobStatus, now: datetime, paused_for: float = 0.0) -> str:
    """Time left at the average rate since the attempt started; empty when unknowable."""
    fraction = status.progress
    ran = ran_for(status, now, paused_for)
    if status.state is not State.RUNNING or not fraction or ran is None or ran <= 0 or fraction >= 1:
        return ""
    return duration(ran * (1 - fraction) / fraction)


def rate(status: JobStatus, now: datetime, paused_for: float = 0.0) -> str:
    fraction = status.progress
    ran = ran_for(status, now, paused_for)
    if status.state is not State.RUNNING or not fraction or not ran or ran <= 0:
        return ""
    per_minute = fraction * 100 / ran * 60
    return f"{per_minute:.1f}%/min" if per_minute < 100 else f"{per_minute / 60:.1f}%/s"


def is_stalled(status: JobStatus, now: datetime) -> bool:
    """Running, and its status not written for a long while: possibly stuck."""
    quiet = seconds_since(status.updated_at, now)
    return status.state is State.RUNNING and quiet is not None and quiet > STALLED_AFTER


def state_text(status: JobStatus, now: datetime, orphaned: bool = False) -> str:
    if orphaned:
        return ORPHANED
    text = status.state.value
    if status.attempt > status.max_attempts:
        text += " (rerun after a crash)"  # an attempt lost with its manager: counted, beyond the retries
    elif status.attempt > 1 or (status.state is State.QUEUED and status.next_try_at):
        text += f" ({status.attempt}/{status.max_attempts})"
    if is_stalled(status, now):
        text += " stalled?"
    return text


def status_table(statuses: list[JobStatus], now: datetime, orphaned: Collection[str] = (),
                 bar_width: int = 20, more: int = 0, width: int | None = None,
                 full_groups: Mapping[str, str] | None = None, paused_for: Mapping[str, float] | None = None,
                 usage: Mapping[str, tuple[str, str]] | None = None) -> Table:
    """The jobs as a table; a column shows only when some job has something to put in it
    (as pueue does), so a spool of plain jobs gets a narrow table. No row ever wraps: in
    ``width`` columns the id and the state stay whole (they are what one types next); the
    message and then the name give way, cut with an ellipsis; then the bar narrows, and
    the rate, the priority, the ETA, the elapsed time, the bar (its percentage stays), the
    message and the name are left out, in that order. ``width`` None (not a terminal):
    nothing is cut at all. ``more``: jobs left out. ``full_groups``: what a queued job of
    a group at its limit says (``group gpu 1/1``); ``paused_for``: each job's seconds paused,
    left out of the time it ran; ``usage``: each job's CPU and RSS cells (`pool top`,
    `pool status --usage`), left out early on a narrow terminal."""
    from rich.table import Table

    lost = set(orphaned)
    for bar, dropped in FALLBACKS if width is not None else [(bar_width, ())]:
        columns = table_columns(now, lost, min(bar, bar_width), full_groups or {}, paused_for or {}, usage or {})
        rows = [[str(cell(s)) for _, cell in columns] for s in statuses]
        keep = [i for i, (name, _) in enumerate(columns) if name not in dropped
                and (name not in OPTIONAL or any(row[i] for row in rows))]
        names = [columns[i][0] for i in keep]
        widths = column_widths(names, [[row[i] for i in keep] for row in rows], width)
        if width is None or sum(widths) + GAP * (len(widths) - 1) <= width:
            break
    table = Table(box=None, pad_edge=False, padding=(0, GAP, 0, 0), header_style="bold")
    for name, column_width in zip(names, widths, strict=True):
        table.add_column(name, no_wrap=True, overflow="ellipsis", width=column_width)
    for status in statuses:
        cells = {name: cell(status) for name, cell in columns}
        table.add_row(*(cells[name] for name in names))
    if more:
        table.add_row(f"…and {more} more", *([""] * (len(names) - 1)))
    return table


OPTIONAL = {"RATE", "ETA", "CPU", "RSS", "PRIO", "HOST", "MESSAGE"}
USAGE = ("CPU", "RSS")
# What a narrow terminal does without, step by step: (the bar's width, columns left out).
FALLBACKS: list[tuple[int, tuple[str, ...]]] = [
    (20, ()), (10, ()), (10, USAGE), (10, (*USAGE, "RATE")), (10, (*USAGE, "RATE", "PRIO")),
    (10, (*USAGE, "RATE", "PRIO", "ETA")), (5, (*USAGE, "RATE", "PRIO", "ETA")),
    (5, (*USAGE, "RATE", "PRIO", "ETA", "ELAPSED")), (5, (*USAGE, "RATE", "PRIO", "ETA", "ELAPSED", "HOST")),
    # Very long ids on a small screen: the percentage alone, then no message, then no name.
    (0, (*USAGE, "RATE", "PRIO", "ETA", "ELAPSED", "HOST")),
    (0, (*USAGE, "RATE", "PRIO", "ETA", "ELAPSED", "HOST", "MESSAGE")),
    (0, (*USAGE, "RATE", "PRIO", "ETA", "ELAPSED", "HOST", "MESSAGE", "NAME")),
]


def table_columns(now: datetime, lost: set[str], bar_width: int, full_groups: Mapping[str, str],
                  paused_for: Mapping[str, float], usage: Mapping[str, tuple[str, str]],
                  ) -> list[tuple[str, Callable[[JobStatus], str | Text]]]:
    from rich.text import Text

    return [
        ("ID", lambda s: s.id),
        ("NAME", lambda s: s.spec.name),
        ("STATE", lambda s: Text(state_text(s, now, s.id in lost), style="red" if s.id in lost
                                 else STATE_STYLES[s.state])),
        ("PROGRESS", lambda s: f"{progress_bar(shown_progress(s), bar_width)} {percent(shown_progress(s))}".strip()),
        ("RATE", lambda s: "" if s.id in lost else rate(s, now, paused_for.get(s.id, 0.0))),
        ("ETA", lambda s: "" if s.id in lost else eta(s, now, paused_for.get(s.id, 0.0))),
        ("ELAPSED", lambda s: elapsed(s, now, paused_for.get(s.id, 0.0))),
        ("CPU", lambda s: usage.get(s.id, ("", ""))[0]),
        ("RSS", lambda s: usage.get(s.id, ("", ""))[1]),
        ("PRIO", lambda s: str(s.spec.priority) if s.spec.priority else ""),
        ("HOST", lambda s: s.host or ""),  # the machine it ran on (--engine celery): shown when one did
        ("MESSAGE", lambda s: one_line(ORPHANED_MESSAGE if s.id in lost else status_message(s, now, full_groups))),
    ]


GAP = 2  # cells between two columns
GIVE_WAY = ("MESSAGE", "NAME")  # cut, in this order, when a row is too wide; the rest stay whole


def column_widths(names: list[str], cells: list[list[str]], width: int | None) -> list[int]:
    """Each column's width: what its widest cell needs; within ``width`` (GAP cells between
    columns), the name and then the message are narrowed, down to a few cells."""
    wanted = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(names)]
    if width is None:
        return wanted
    over = sum(wanted) + GAP * (len(wanted) - 1) - width
    for name in GIVE_WAY:
        if over <= 0 or name not in names:
            continue
        i = names.index(name)
        floor = min(wanted[i], len(name) + 1)
        cut = min(over, wanted[i] - floor)
        wanted[i] -= cut
        over -= cut
    return wanted


ORPHANED_MESSAGE = "no process runs it (its manager and worker are gone); the next manager runs it again"
FIT_ORDER = {State.RUNNING: 0, State.PAUSED: 0, State.QUEUED: 1, State.WAITING: 2}


def fit(statuses: list[JobStatus], rows: int) -> tuple[list[JobStatus], int]:
    """At most ``rows`` jobs for a screen that holds no more: running first, then queued,
    then the most recently ended; returns them and how many were left out."""
    if len(statuses) <= rows:
        return statuses, 0
    ranked = sorted(statuses, key=lambda s: s.finished_at or s.updated_at, reverse=True)
    ranked.sort(key=lambda s: FIT_ORDER.get(s.state, 2))  # stable: newest first within each
    return ranked[:rows], len(statuses) - rows


def status_message(status: JobStatus, now: datetime | None = None, full_groups: Mapping[str, str] | None = None) -> str:
    if status.state is State.QUEUED and full_groups and status.spec.queue_group in full_groups and \
            not status.next_try_at:
        return full_groups[status.spec.queue_group]
    if status.state in (State.FAILED, State.CANCELLED) and status.error:
        return status.error_text
    if status.state is State.WAITING:
        return waits_text(status, now)
    if status.state is State.QUEUED and status.next_try_at:
        return f"retry at {status.next_try_at}" + (f" after {status.error.get('type')}" if status.error else "")
    return status.message or ""


def when_lines(status: JobStatus, now: datetime) -> list[str]:
    """When a job that has not started will: its next try, or the end of its wait."""
    if status.next_try_at:
        return [f"next try:  {status.next_try_at}"]
    if status.state is State.WAITING and status.waits:
        return [f"waits:     {encode_json(dict(status.waits)).decode()} ({waits_text(status, now)})"]
    return []


def waits_text(status: JobStatus, now: datetime | None = None) -> str:
    """``waits until 14:00`` (local time; the date too when not today)."""
    waits = status.waits or {}
    said = []
    after = waits.get("after")
    if isinstance(after, list) and after:
        said.append("after " + ", ".join(after[:3]) + (f" and {len(after) - 3} more" if len(after) > 3 else ""))
    until = waits.get("until")
    if isinstance(until, str):
        moment = parse_time(until).astimezone()
        clock = moment.strftime("%H:%M:%S" if moment.second or moment.microsecond else "%H:%M")
        today = now is not None and now.astimezone().date() == moment.date()
        said.append(f"until {clock}" if today else f"until {moment.strftime('%Y-%m-%d')} {clock}")
    if waits.get("paused"):
        return "held (pool resume " + status.id + ")" + (": then waits " + " and ".join(said) if said else "")
    return "waits " + " and ".join(said) if said else "waits"


def as_json(value: Any) -> str:
    return encode_json(value).decode()


def one_line(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def detail_lines(status: JobStatus, now: datetime, events: list[dict[str, Any]], log_tail: list[str],
                 orphaned: Collection[str] = (), paused_for: float = 0.0, saved: Saved | None = None) -> list[str]:
    """The detail view of one job: every field, its timeline, its error, its last output.
    Values are JSON, a command is quoted as a shell would need it, so both can be copied."""
    spec = status.spec
    fraction = shown_progress(status)
    what = spec.task if spec.task is not None else shlex.join(spec.command or ())
    state = state_text(status, now, status.id in orphaned)
    lines = [
        f"id:        {status.id}",
        f"name:      {spec.name}",
        f"{spec.kind + ':':<10} {what}",
        f"state:     {state}" + (f" ({ORPHANED_MESSAGE})" if status.id in orphaned else ""),
        f"progress:  {progress_bar(fraction, 30)} {percent(fraction)}".rstrip(),
        f"message:   {status.message or ''}".rstrip(),
        f"attempt:   {status.attempt} of {status.max_attempts}",
        f"priority:  {spec.priority}",
        f"created:   {status.created_at}",
        f"started:   {status.started_at or ''}".rstrip(),
        f"finished:  {status.finished_at or ''}".rstrip(),
        (f"elapsed:   {elapsed(status, now, paused_for)}" + (f" (and {duration(paused_for)} paused)" if paused_for
                                                             else "")).rstrip(),
        f"pid:       {status.pid or ''}".rstrip(),
        f"log:       {status.log}",
    ]
    if status.host:
        lines.insert(-1, f"host:      {status.host}")  # the machine it ran on (--engine celery)
    if spec.task is not None:
        lines.append(f"args:      {as_json(list(spec.args))}")
        if spec.kwargs:
            lines.append(f"kwargs:    {as_json(dict(spec.kwargs))}")
    elif spec.cwd:
        lines.append(f"cwd:       {spec.cwd}")
    lines += when_lines(status, now)
    lines += long_job_lines(status, now, saved)
    if status.exit_code is not None:
        lines.append(f"exit code: {status.exit_code}")
    if status.state is State.DONE and spec.task is not None:
        lines.append(f"result:    {as_json(status.result)}")
    if spec.meta:
        lines.append(f"meta:      {as_json(dict(spec.meta))}")
    if status.error:
        lines.append(f"error:     {status.error_text}")
        if status.error.get("traceback"):
            lines += ["", *str(status.error["traceback"]).rstrip().splitlines()]
    if events:
        lines += ["", "timeline:"]
        for event in events:
            lines.append(f"  {event.get('time')}  {event.get('from') or '-':>9} -> {event.get('to'):<9} "
                         f"attempt {event.get('attempt')}  {event.get('reason') or ''}".rstrip())
    if log_tail:
        lines += ["", f"last lines of {status.log}:", *(f"  {line}" for line in log_tail)]
    return lines
