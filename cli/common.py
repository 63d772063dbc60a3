"""What every command module shares: the console, the clock, job id completion.

rich (and cli.render, built on it) is imported where a table is drawn, not at start-up:
`pool status --json` and `pool submit` in scripts should not pay for it."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import click

from pool.client import Spool, default_spool_path
from pool.limits import parse_size
from pool.rules import parse_duration

if TYPE_CHECKING:
    from rich.console import Console


def console() -> Console:
    from rich.console import Console

    out = Console(highlight=False, soft_wrap=False)
    if not out.is_terminal:
        # Piped or redirected: lines as long as they need (a table is never cut to fit a
        # width nobody sees: `pool status | grep` finds whole ids and states).
        out.width = UNCUT_WIDTH
    return out


UNCUT_WIDTH = 1 << 15


def now() -> datetime:
    return datetime.now(timezone.utc)


def complete_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of job ids (``_POOL_COMPLETE=bash_source pool``)."""
    spool = Spool(ctx.find_root().params.get("spool_path") or default_spool_path())
    try:
        return sorted(i for i in spool.dir.status_ids() if i.startswith(incomplete))
    except OSError:
        return []


def say_no_manager(spool: Spool, then: str) -> None:
    """One line on stderr (never in output a script parses) when no manager serves."""
    click.echo(f"pool: no manager is serving {spool.path}; {then}", err=True)


FOLLOW_INTERVAL = 0.05


def read_log(spool: Spool, job_id: str) -> bytes:
    """The job's whole log as it is now (empty before it printed anything), opened as
    every spool file is: a link planted in its place is refused, never followed."""
    try:
        fd = spool.dir.open_log_to_read(job_id)
    except FileNotFoundError:
        return b""
    try:
        return os.pread(fd, os.fstat(fd).st_size + (1 << 20), 0)
    finally:
        os.close(fd)


def follow_log(spool: Spool, job_id: str, offset: int = 0, head: bytes = b"") -> None:
    """Copy the job's log to stdout from ``offset`` on, as it grows, until the job is
    final and everything it printed has been shown (``log_pieces``)."""
    out = sys.stdout.buffer
    for piece in log_pieces(spool, job_id, offset, head):
        if piece:
            out.write(piece)
            out.flush()
        else:
            time.sleep(FOLLOW_INTERVAL)


def log_pieces(spool: Spool, job_id: str, offset: int = 0, head: bytes = b"") -> Iterator[bytes]:
    """The job's log from ``offset`` on, piece by piece as it grows; b"" when nothing new
    is there yet (the caller waits as it can: a sleep, an await), ending once the job is
    final and everything it printed was given. ``head``: the start of the log as
    ``offset`` was found in it. A log cut to its size limit meanwhile (pool.joblog) is
    followed on from where it was; output cut before it was given is said in a line."""
    from pool import joblog

    cut = joblog.dropped_before(head)
    while True:
        final = spool.status(job_id).state.is_final  # looked at first: no output is missed
        try:
            fd = spool.dir.open_log_to_read(job_id)
        except FileNotFoundError:
            fd = None
            chunk = b""
        if fd is not None:
            try:
                now_cut = joblog.dropped_before(os.pread(fd, joblog.HEAD_BYTES, 0))
                if now_cut != cut or os.fstat(fd).st_size < offset:
                    offset, missed = joblog.resume_at(now_cut, joblog.output_shown(cut, offset))
                    cut = now_cut
                    if missed:
                        yield b"--- pool: %d bytes of output were cut from the log before they were shown ---\n" \
                            % missed
                chunk = os.pread(fd, 1 << 30, offset)
                if chunk and joblog.dropped_before(os.pread(fd, joblog.HEAD_BYTES, 0)) != cut:
                    continue  # cut while it was read: read again where the output now is
            finally:
                os.close(fd)
        if chunk:
            offset += len(chunk)
            yield chunk
        elif final:
            return
        else:
            yield b""


_ParamType: Any = click.ParamType  # generic in newer click, plain in older: either works here


class Duration(_ParamType):  # type: ignore[misc]
    """``90s``, ``15m``, ``1h``, ``7d``, ``2w`` (or plain seconds) as seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        seconds = parse_duration(value)
        return seconds if seconds is not None else self.fail(
            f"{value!r} is not a duration like 90s, 15m, 1h, 7d (and not negative)", param, ctx)


class Size(_ParamType):  # type: ignore[misc]
    """``2G``, ``512M``, ``1.5G`` (powers of 1024), or bytes."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        size = parse_size(value)
        return size if size is not None else self.fail(f"{value!r} is not a size like 2G or 512M", param, ctx)
