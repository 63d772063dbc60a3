"""Statuses to text: tables, progress bars, the detail view. Pure: no I/O, no clock."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from rich.table import Table
from rich.text import Text

from pool.model import JobStatus, State, parse_time

STATE_STYLES = {
    State.QUEUED: "cyan",
    State.RUNNING: "yellow",
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


def elapsed(status: JobStatus, now: datetime) -> str:
    """How long the job ran (or has been running); empty when it never started."""
    if status.started_at is None:
        return ""
    end = parse_time(status.finished_at) if status.finished_at else now
    return duration((end - parse_time(status.started_at)).total_seconds())


def shown_progress(status: JobStatus) -> float | None:
    return 1.0 if status.state is State.DONE else status.progress


def summary(statuses: Iterable[JobStatus]) -> str:
    counts = {state: 0 for state in State}
    for status in statuses:
        counts[status.state] += 1
    return ", ".join(f"{n} {state.value}" for state, n in counts.items() if n) or "no jobs"


STALLED_AFTER = 120.0  # seconds without a progress update before a running job is flagged


def seconds_since(text: str | None, now: datetime) -> float | None:
    return None if text is None else (now - parse_time(text)).total_seconds()


def eta(status: JobStatus, now: datetime) -> str:
    """Time left at the average rate since the attempt started; empty when unknowable."""
    fraction = status.progress
    ran = seconds_since(status.started_at, now)
    if status.state is not State.RUNNING or not fraction or ran is None or ran <= 0 or fraction >= 1:
        return ""
    return duration(ran * (1 - fraction) / fraction)


def rate(status: JobStatus, now: datetime) -> str:
    fraction = status.progress
    ran = seconds_since(status.started_at, now)
    if status.state is not State.RUNNING or not fraction or not ran or ran <= 0:
        return ""
    per_minute = fraction * 100 / ran * 60
    return f"{per_minute:.1f}%/min" if per_minute < 100 else f"{per_minute / 60:.1f}%/s"


def is_stalled(status: JobStatus, now: datetime) -> bool:
    """Running, and its status not written for a long while: possibly stuck."""
    quiet = seconds_since(status.updated_at, now)
    return status.state is State.RUNNING and quiet is not None and quiet > STALLED_AFTER


def state_text(status: JobStatus, now: datetime) -> str:
    text = status.state.value
    if status.attempt > 1 or (status.state is State.QUEUED and status.next_try_at):
        text += f" ({status.attempt}/{status.max_attempts})"
    if is_stalled(status, now):
        text += " stalled?"
    return text


def status_table(statuses: list[JobStatus], now: datetime, bar_width: int = 20) -> Table:
    """The jobs as a table; a column shows only when some job has something to put in it
    (as pueue does), so a spool of plain jobs gets a narrow table."""
    columns: list[tuple[str, Callable[[JobStatus], str | Text]]] = [
        ("ID", lambda s: s.id),
        ("NAME", lambda s: s.spec.name),
        ("STATE", lambda s: Text(state_text(s, now), style=STATE_STYLES[s.state])),
        ("PROGRESS", lambda s: f"{progress_bar(shown_progress(s), bar_width)} {percent(shown_progress(s))}".rstrip()),
        ("RATE", lambda s: rate(s, now)),
        ("ETA", lambda s: eta(s, now)),
        ("ELAPSED", lambda s: elapsed(s, now)),
        ("PRIO", lambda s: str(s.spec.priority) if s.spec.priority else ""),
        ("MESSAGE", lambda s: one_line(status_message(s))),
    ]
    optional = {"RATE", "ETA", "PRIO", "MESSAGE"}
    rows = [[cell(s) for _, cell in columns] for s in statuses]
    keep = [i for i, (name, _) in enumerate(columns)
            if name not in optional or any(str(row[i]) for row in rows)]
    table = Table(box=None, pad_edge=False, header_style="bold")
    for i in keep:
        name = columns[i][0]
        table.add_column(name, no_wrap=name != "MESSAGE", overflow="ellipsis")
    for row in rows:
        table.add_row(*(row[i] for i in keep))
    return table


def status_message(status: JobStatus) -> str:
    if status.state in (State.FAILED, State.CANCELLED) and status.error:
        return f"{status.error.get('type')}: {status.error.get('message')}"
    if status.state is State.QUEUED and status.next_try_at:
        return f"retry at {status.next_try_at}" + (f" after {status.error.get('type')}" if status.error else "")
    return status.message or ""


def one_line(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def detail_lines(status: JobStatus, now: datetime, events: list[dict[str, Any]], log_tail: list[str]) -> list[str]:
    """The detail view of one job: every field, its timeline, its error, its last output."""
    spec = status.spec
    fraction = shown_progress(status)
    what = spec.task if spec.task is not None else " ".join(spec.command or ())
    lines = [
        f"id:        {status.id}",
        f"name:      {spec.name}",
        f"{spec.kind + ':':<10} {what}",
        f"state:     {status.state.value}",
        f"progress:  {progress_bar(fraction, 30)} {percent(fraction)}".rstrip(),
        f"message:   {status.message or ''}".rstrip(),
        f"attempt:   {status.attempt} of {status.max_attempts}",
        f"priority:  {spec.priority}",
        f"created:   {status.created_at}",
        f"started:   {status.started_at or ''}".rstrip(),
        f"finished:  {status.finished_at or ''}".rstrip(),
        f"elapsed:   {elapsed(status, now)}".rstrip(),
        f"pid:       {status.pid or ''}".rstrip(),
        f"log:       {status.log}",
    ]
    if spec.task is not None:
        lines.append(f"args:      {list(spec.args)} {dict(spec.kwargs) or ''}".rstrip())
    if status.next_try_at:
        lines.append(f"next try:  {status.next_try_at}")
    if status.exit_code is not None:
        lines.append(f"exit code: {status.exit_code}")
    if status.state is State.DONE and spec.task is not None:
        lines.append(f"result:    {status.result!r}")
    if spec.meta:
        lines.append(f"meta:      {dict(spec.meta)}")
    if status.error:
        lines.append(f"error:     {status.error.get('type')}: {status.error.get('message')}")
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
