"""What the dashboard shows, as JSON-ready dicts: a page of jobs (filtered, newest first,
counted by state) and one job whole. Read from the spool as `pool status` reads it, and
rendered by the same functions (pool.cli.render), so the two never disagree. No HTTP
here: app.py serves these, and tests call them directly."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pool.cli import render
from pool.client import Spool
from pool.errors import CorruptStatus, JobNotFound
from pool.finding import Brief
from pool.model import ID_PATTERN, JobStatus, State

PER_PAGE = 50
MAX_PER_PAGE = 500
MAX_FILTER = 200  # characters of a name pattern or a text to look for
STATE_NAMES = tuple(state.value for state in State)


class BadQuery(ValueError):
    """A filter or page the dashboard cannot serve: said back to the caller (HTTP 400)."""


@dataclass(frozen=True)
class Query:
    """Which jobs a page lists: any of ``states``; ``name``, a pattern of the name or id
    (as `pool status --name`); ``group``, exactly; ``text``, anywhere in the id, name or
    group, in any case. Page ``page`` (from 1) of ``per`` rows, newest first."""

    states: tuple[str, ...] = ()
    name: str = ""
    group: str = ""
    text: str = ""
    page: int = 1
    per: int = PER_PAGE

    @classmethod
    def parse(cls, params: Mapping[str, str], states: Sequence[str] = ()) -> Query:
        """From a URL's query (``states``: each ``state`` given, as a form sends them)."""
        for state in states:
            if state not in STATE_NAMES:
                raise BadQuery(f"no state {state!r}: one of {', '.join(STATE_NAMES)}")
        texts = {key: params.get(key, "").strip() for key in ("name", "group", "text")}
        for key, value in texts.items():
            if len(value) > MAX_FILTER:
                raise BadQuery(f"{key} is over {MAX_FILTER} characters")
        return cls(tuple(dict.fromkeys(states)), texts["name"], texts["group"], texts["text"],
                   _number(params, "page", 1, 1, 1 << 30), _number(params, "per", PER_PAGE, 1, MAX_PER_PAGE))

    def wants(self, brief: Brief) -> bool:
        if self.group and brief.group != self.group:
            return False
        if self.name and not (fnmatch.fnmatchcase(brief.name, self.name) or fnmatch.fnmatchcase(brief.id, self.name)):
            return False
        if self.text:
            folded = self.text.casefold()
            return any(folded in value.casefold() for value in (brief.id, brief.name, brief.group))
        return True


def _number(params: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    text = params.get(key, "")
    if not text:
        return default
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise BadQuery(f"{key} must be a whole number from {low} to {high}")
    return int(text)


def jobs_page(spool: Spool, query: Query, now: datetime, briefs: Sequence[Brief] | None = None) -> dict[str, Any]:
    """One page of the jobs ``query`` picks, with the counts of every job by state
    (``briefs``: every job's, when the caller has them already)."""
    briefs = spool.briefs() if briefs is None else briefs
    counts = {state: 0 for state in STATE_NAMES}
    for brief in briefs:
        counts[brief.state.value] += 1
    wanted = set(query.states)
    picked = [b for b in briefs if (not wanted or b.state.value in wanted) and query.wants(b)]
    pages = max(1, -(-len(picked) // query.per))
    page = min(query.page, pages)
    shown = spool.decoded(picked[(page - 1) * query.per:page * query.per])
    paused, full = spool.paused_for(shown), spool.full_groups(briefs)
    return {"counts": counts, "total": len(briefs), "matched": len(picked), "page": page, "pages": pages,
            "per": query.per, "rows": [row(status, now, paused.get(status.id, 0.0), full) for status in shown],
            "manager": manager_state(spool)}


def row(status: JobStatus, now: datetime, paused_for: float = 0.0, full_groups: Mapping[str, str] | None = None
        ) -> dict[str, Any]:
    """A job as a row of the jobs page shows it (the columns of `pool status`; its
    message is the table's: an error, what it waits for, why its group holds it)."""
    fraction = render.shown_progress(status)
    return {"id": status.id, "name": status.spec.name, "group": status.spec.queue_group,
            "state": status.state.value, "state_text": render.state_text(status, now),
            "progress": fraction, "percent": render.percent(fraction).strip(),
            "rate": render.rate(status, now, paused_for), "eta": render.eta(status, now, paused_for),
            "elapsed": render.elapsed(status, now, paused_for), "attempt": status.attempt,
            "max_attempts": status.max_attempts, "message": render.status_message(status, now, full_groups),
            "created_at": status.created_at,
            "final": status.state.is_final}


def manager_state(spool: Spool) -> dict[str, Any]:
    serving = spool.dir.serving()
    return {"running": serving is not None, "trouble": serving.trouble if serving is not None else None,
            "stopping": serving.stopping if serving is not None else None}


def job_status(spool: Spool, job_id: str) -> JobStatus:
    """The job's status; JobNotFound for what is not a job's id or names no job (a path,
    a name too long, one that is not ours to read)."""
    if not ID_PATTERN.match(job_id):
        raise JobNotFound(f"no job {job_id!r}")
    try:
        return spool.status(job_id)
    except CorruptStatus as exc:
        raise JobNotFound(str(exc)) from None


def job_view(spool: Spool, status: JobStatus, now: datetime) -> dict[str, Any]:
    """One job whole: its status document, its row, and the lines of `pool status ID`
    (every field, its timeline, its error), its log apart (followed live)."""
    paused = spool.paused_for([status]).get(status.id, 0.0)
    events = spool.events(status.id)
    lines = render.detail_lines(status, now, events, [], (), paused, spool.dir.checkpoints.saved(status.id))
    return {"status": status.to_dict(), "row": row(status, now, paused), "detail": lines, "events": events,
            "manager": manager_state(spool)}
