"""Rendering statuses: golden text, colour off."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from rich.console import Console

from pool.cli import render
from pool import lifecycle
from pool.jobfile import parse_job
from pool.model import new_status

T0 = "2026-01-01T00:00:00.000000Z"
NOW = datetime(2026, 1, 1, 0, 1, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize("fraction, expected", [
    (None, "··········"), (0.0, "··········"), (0.5, "█████·····"), (1.0, "██████████"),
    (0.37, "███▊······"), (1.5, "██████████"),
])
def test_progress_bar(fraction: float | None, expected: str) -> None:
    assert render.progress_bar(fraction, 10) == expected


@pytest.mark.parametrize("seconds, expected", [(0, "0s"), (59.9, "59s"), (65, "1m05s"), (3600 * 2 + 60, "2h01m")])
def test_duration(seconds: float, expected: str) -> None:
    assert render.duration(seconds) == expected


def test_table_shows_each_job_with_bar_state_and_elapsed() -> None:
    job = new_status(parse_job({"task": "m:f", "id": "render-1", "name": "render"}, "t", "t"), T0)
    running = lifecycle.start(job, 1, 1, T0)
    from dataclasses import replace
    running = replace(running, progress=0.5, message="halfway")
    out = Console(width=120, no_color=True, record=True)
    out.print(render.status_table([running], NOW, bar_width=10))
    text = out.export_text()
    assert "render-1" in text and "running" in text and "█████·····  50%" in text
    assert "1m05s" in text and "halfway" in text


def test_summary_counts_states() -> None:
    job = new_status(parse_job({"task": "m:f", "id": "a"}, "t", "t"), T0)
    done = lifecycle.succeed(lifecycle.start(job, 1, 1, T0), None, T0)
    assert render.summary([job, job, done]) == "2 queued, 1 done"
    assert render.summary([]) == "no jobs"
