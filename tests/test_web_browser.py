"""The dashboard in a real headless Chromium, as a person uses it: Debian's chromium,
driven by Playwright through its ``executable_path`` (Playwright's own browser download
cannot work on these machines). A real `pool serve` runs the jobs and a real `pool web`
serves the pages; every wait is on the page's own state, never a sleep.

``POOL_SCREENSHOTS=DIR`` keeps the screenshots the tests take (the README's come from it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CHROMIUM, run_pool, state_of, wait_until

pytestmark = pytest.mark.needs_chromium("to test the dashboard in a real browser")

HOSTILE = "<img src=x onerror=alert(1)><script>alert(2)</script>"
PATIENCE = 30_000  # ms a page may take to show what a test waits for (a loaded machine)


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: Chromium's sandbox refuses to run as root (CI runs as root)
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page that records every dialog (an XSS would open one) and every script error."""
    opened = browser.new_page(viewport={"width": 1400, "height": 700})
    opened.dialogs, opened.errors = [], []
    opened.on("dialog", lambda d: (opened.dialogs.append(d.message), d.dismiss()))
    opened.on("pageerror", lambda e: opened.errors.append(str(e)))
    yield opened
    assert opened.dialogs == [] and opened.errors == []
    opened.close()


def screenshot(page: Any, name: str) -> None:
    folder = os.environ.get("POOL_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / name))


def submitted(spool_dir: Path, *args: str) -> str:
    return run_pool(spool_dir, "submit", *args, check=True).stdout.strip()


def bar_width(page: Any, job_id: str) -> float:
    """The job's bar as drawn: its fill's width in pixels."""
    return float(page.eval_on_selector(f'tr[data-id="{job_id}"] .fill', "e => e.getBoundingClientRect().width"))


def test_the_jobs_page_grows_bars_live_and_its_kill_button_cancels(spool_dir: Path, serve: Any, web: Any,
                                                                  page: Any, tmp_path: Path) -> None:
    serve("--workers", "3")
    gates = tmp_path / "gates"
    gates.mkdir()
    for n in range(3):  # jobs ended beside it: rows of other states, bars in the chart
        submitted(spool_dir, "--name", f"render-{n}", "pooltest_tasks:add", "1", str(n))
    failed = submitted(spool_dir, "--name", "encode", "pooltest_tasks:fail", "no codec")
    other = submitted(spool_dir, "--name", "train", "pooltest_tasks:steps_on_gates", str(tmp_path), "3", "epoch")
    job_id = submitted(spool_dir, "--name", HOSTILE, "pooltest_tasks:steps_on_gates", str(gates), "4", HOSTILE)
    page.goto(web().url)
    page.wait_for_selector(f'tr[data-id="{other}"].state-running', timeout=PATIENCE)
    page.wait_for_selector(f'tr[data-id="{failed}"].state-failed', timeout=PATIENCE)
    assert "no codec" in page.inner_text(f'tr[data-id="{failed}"] td.message')  # its error, as `pool status` says it
    row = f'tr[data-id="{job_id}"]'
    page.wait_for_selector(f"{row} .fill[style*='25']", timeout=PATIENCE)  # step 1 of 4
    first = bar_width(page, job_id)
    # A name made of markup is shown as the text it is: no element made of it, no dialog.
    assert page.inner_text(f"{row} td.name") == HOSTILE
    assert page.inner_text(f"{row} td.message") == f"{HOSTILE}: step 1 of 4"
    assert page.query_selector("img[src=x]") is None and page.query_selector("tbody script") is None
    (gates / "1").touch()
    page.wait_for_selector(f"{row} .fill[style*='50']", timeout=PATIENCE)  # no reload: the stream brought it
    wait_until(lambda: bar_width(page, job_id) > first, what="the bar drawn wider")
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    screenshot(page, "dashboard-jobs.png")
    page.click(f"{row} button.kill")
    wait_until(lambda: state_of(spool_dir, job_id) == "cancelled", what="cancelled")
    page.wait_for_selector(f"{row}.state-cancelled", timeout=PATIENCE)
    assert page.query_selector(f"{row} button.kill") is None  # a job ended offers no kill


def test_filters_narrow_the_list_and_the_charts_draw(spool_dir: Path, serve: Any, web: Any, page: Any) -> None:
    serve()
    for name in ("render-a", "render-b", "encode-a"):
        submitted(spool_dir, "--name", name, "pooltest_tasks:add", "1", "2")
    page.goto(web().url)
    page.wait_for_function("document.querySelectorAll('#jobs tbody tr.state-done').length === 3", timeout=PATIENCE)
    # The charts draw what events.jsonl says: three done this minute, the queue empty now.
    page.wait_for_selector("#chart-ended rect.done", timeout=PATIENCE)
    heights = page.eval_on_selector_all("#chart-ended rect.done", "rs => rs.map(r => +r.getAttribute('height'))")
    assert heights and max(heights) > 100  # the minute with the three is the chart's top
    assert page.query_selector("#chart-depth polyline") is not None
    page.fill("input[name=name]", "render-*")
    page.click("form#filters button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#jobs tbody tr').length === 2", timeout=PATIENCE)
    assert sorted(page.eval_on_selector_all("#jobs td.name", "cells => cells.map(c => c.textContent)")) == \
        ["render-a", "render-b"]
    page.fill("input[name=name]", "")
    page.fill("input[name=text]", "ENCODE")
    page.click("form#filters button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#jobs tbody tr').length === 1", timeout=PATIENCE)
    assert page.inner_text("#jobs td.name") == "encode-a"


def test_a_jobs_page_follows_its_log_as_it_is_printed(spool_dir: Path, serve: Any, web: Any, page: Any,
                                                      tmp_path: Path) -> None:
    serve()
    gates = tmp_path / "gates"
    gates.mkdir()
    job_id = submitted(spool_dir, "pooltest_tasks:steps_on_gates", str(gates), "3", HOSTILE)
    server = web()
    page.goto(server.url)
    page.goto(f"{server.base}/jobs/{job_id}")
    page.wait_for_function("document.getElementById('log').textContent.includes(' 1\\n')", timeout=PATIENCE)
    assert " 2\n" not in page.inner_text("#log")  # not printed yet
    (gates / "1").touch()
    page.wait_for_function("document.getElementById('log').textContent.includes(' 2\\n')", timeout=PATIENCE)
    assert page.evaluate("document.getElementById('log').textContent") == f"{HOSTILE} 1\n{HOSTILE} 2\n"
    assert page.query_selector("#log img, #log script") is None
    page.wait_for_function("document.getElementById('detail').textContent.includes('step 2 of 3')",
                           timeout=PATIENCE)
    page.wait_for_selector("#chart-progress polyline", timeout=PATIENCE)  # its progress, as it came
    screenshot(page, "dashboard-job.png")
    (gates / "2").touch()
    (gates / "3").touch()
    page.wait_for_function("document.getElementById('log-state').textContent === '(ended)'", timeout=PATIENCE)
    page.wait_for_function("document.getElementById('job-state').textContent.startsWith('done')", timeout=PATIENCE)
    assert page.evaluate("document.getElementById('log').textContent").endswith(f"{HOSTILE} 3\n")


def test_a_task_submitted_from_the_page_runs(spool_dir: Path, serve: Any, web: Any, page: Any) -> None:
    serve()
    page.goto(web().url)
    page.click("details.submit summary")
    page.fill("#submit input[name=task]", "pooltest_tasks:add")
    page.fill("#submit input[name=args]", "[2, 3]")
    page.fill("#submit input[name=name]", "from the page")
    page.click("#submit button[type=submit]")
    link = page.wait_for_selector("#submitted a", timeout=PATIENCE)
    job_id = link.text_content().split()[-1]
    wait_until(lambda: state_of(spool_dir, job_id) == "done", what="done")
    page.wait_for_selector(f'tr[data-id="{job_id}"].state-done', timeout=PATIENCE)
    assert page.inner_text(f'tr[data-id="{job_id}"] td.name') == "from the page"
    page.fill("#submit input[name=args]", "[2, ")  # not JSON: said, nothing sent
    page.click("#submit button[type=submit]")
    page.wait_for_function("document.getElementById('submitted').textContent.startsWith('args and kwargs are JSON')",
                           timeout=PATIENCE)
