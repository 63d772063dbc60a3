"""What every command module shares: the console, the clock, job id completion.

rich (and cli.render, built on it) is imported where a table is drawn, not at start-up:
`pool status --json` and `pool submit` in scripts should not pay for it."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

import click

from pool.client import Spool, default_spool_path

if TYPE_CHECKING:
    from rich.console import Console


def console() -> Console:
    from rich.console import Console

    out = Console(highlight=False, soft_wrap=False)
    if not out.is_terminal:
        out.width = max(out.width, 160)
    return out


def now() -> datetime:
    return datetime.now(timezone.utc)


def complete_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of job ids (``_POOL_COMPLETE=bash_source pool``)."""
    spool = Spool(ctx.find_root().params.get("spool_path") or default_spool_path())
    try:
        return sorted(i for i in spool.dir.status_ids() if i.startswith(incomplete))
    except OSError:
        return []
