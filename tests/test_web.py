"""`pool web` over HTTP, as a program (or an attacker) calls it: a real `pool web`
process, a real `pool serve` where jobs must run, and plain HTTP requests. The pages in a
browser are tests/test_web_browser.py's."""

from __future__ import annotations

import contextlib
import http.client
import os
import stat
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import made, run_pool, state_of, wait_until

from pool.client import Spool
from pool.web import access
from pool.web.pages import BadQuery, Query


def submitted(spool_dir: Path, *args: str) -> str:
    return run_pool(spool_dir, "submit", *args, check=True).stdout.strip()


# ---------------------------------------------------------------- who may look and act
def test_every_page_and_call_needs_the_token_which_the_browser_trades_for_a_cookie(spool_dir: Path, web: Any) -> None:
    made(spool_dir)
    server = web()
    for path in ("/", "/api/jobs", "/jobs/x", "/api/stream", "/jobs/x/log"):
        assert server.call(path, token=False)[0] == 403, path
    assert server.call("/?token=not-it", token=False)[0] == 403
    status, headers, _ = server.call(f"/?token={server.token}&state=done", token=False)
    assert (status, headers["location"]) == (303, "/?state=done")  # the token leaves the address bar
    cookie = headers["set-cookie"]
    assert f"{access.COOKIE}={server.token}" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert server.call("/", token=False, headers={"Cookie": f"{access.COOKIE}={server.token}"})[0] == 200
    assert server.call("/", token=False, headers={"Cookie": f"{access.COOKIE}=wrong"})[0] == 403


def test_the_token_is_kept_0600_in_the_spool_and_one_unfit_to_use_is_replaced(tmp_path: Path) -> None:
    spool = Spool(made(tmp_path / "spool")).dir
    kept = spool.root / access.TOKEN_FILE
    token = access.spool_token(spool)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and len(token) >= 32
    assert access.spool_token(spool) == token  # a restart keeps it: bookmarks go on working
    kept.chmod(0o644)  # others could have read it: it is no secret any more
    replaced = access.spool_token(spool)
    assert replaced != token and stat.S_IMODE(kept.stat().st_mode) == 0o600
    outside = tmp_path / "planted"
    outside.write_text("a" * 40)
    kept.unlink()
    kept.symlink_to(outside)  # never followed: neither read nor written through
    fresh = access.spool_token(spool)
    assert fresh != "a" * 40 and outside.read_text() == "a" * 40 and not kept.is_symlink()


def test_no_token_off_loopback_is_refused_with_one_line(spool_dir: Path) -> None:
    made(spool_dir)
    result = run_pool(spool_dir, "web", "--host", "0.0.0.0", "--no-token", "--port", "0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("Error: --no-token on 0.0.0.0"), result.stderr
    assert "Traceback" not in result.stderr


def test_actions_are_posts_with_the_token_from_the_dashboards_own_origin(spool_dir: Path, serve: Any, web: Any,
                                                                        tmp_path: Path) -> None:
    serve()
    server = web()
    job_id = submitted(spool_dir, "pooltest_tasks:steps_on_gates", str(tmp_path), "3")
    wait_until(lambda: state_of(spool_dir, job_id) == "running", what="running")
    kill = f"/api/jobs/{job_id}/kill"
    cookie = {"Cookie": f"{access.COOKIE}={server.token}"}
    refused = [
        server.call(kill, "POST", token=False),  # no token
        server.call(kill, "POST", headers={"Origin": "http://evil.example"}),  # another site's page
        server.call(kill, "POST", token=False, headers={**cookie, "Origin": "http://evil.example"}),
        server.call(kill, "POST", token=False, headers={**cookie, "Origin": "null"}),
        server.call(kill, "POST", token=False, headers=cookie),  # a browser's, saying from nowhere
    ]
    assert [status for status, _, _ in refused] == [403] * 5
    assert server.call(kill)[0] == 405  # a GET changes nothing
    assert state_of(spool_dir, job_id) == "running"
    host = server.base.split("//", 1)[1]
    status, _, body = server.call(kill, "POST", token=False, headers={**cookie, "Origin": f"http://{host}"})
    assert status == 200, body
    wait_until(lambda: state_of(spool_dir, job_id) == "cancelled", what="cancelled")
    assert server.call(f"/api/jobs/{job_id}/explode", "POST")[0] == 404


def test_read_only_shows_no_action_and_refuses_every_one(spool_dir: Path, serve: Any, web: Any, tmp_path: Path) -> None:
    serve()
    server = web("--read-only")
    job_id = submitted(spool_dir, "pooltest_tasks:steps_on_gates", str(tmp_path), "3")
    wait_until(lambda: state_of(spool_dir, job_id) == "running", what="running")
    for action in ("kill", "pause", "retry", "resume"):
        assert server.call(f"/api/jobs/{job_id}/{action}", "POST")[0] == 403
    assert state_of(spool_dir, job_id) == "running"
    status, _, page = server.call(f"/jobs/{job_id}")
    assert status == 200 and b'data-action="kill"' not in page and b'data-read-only="yes"' in page
    (tmp_path / "1").touch()


def test_a_task_is_submitted_by_a_post_of_its_job_and_nothing_else_is(spool_dir: Path, serve: Any, web: Any) -> None:
    serve()
    server = web()

    def post(body: bytes, **kwargs: Any) -> tuple[int, Any]:
        request = urllib.request.Request(server.base + "/api/jobs", data=body, method="POST",
                                         headers={"Authorization": f"Bearer {server.token}", **kwargs})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, orjson.loads(exc.read())

    status, answer = post(orjson.dumps({"task": "pooltest_tasks:add", "args": [2, 3], "name": "sum"}))
    assert status == 201, answer
    wait_until(lambda: state_of(spool_dir, answer["id"]) == "done", what="done")
    assert Spool(spool_dir).status(answer["id"]).result == 5
    for body in (b"[1", b"[]", orjson.dumps({"args": [1]}), orjson.dumps({"command": ["rm", "-rf", "/"]}),
                 orjson.dumps({"task": "pooltest_tasks:add", "command": ["id"]}),
                 orjson.dumps({"task": "pooltest_tasks:add", "env": {"LD_PRELOAD": "/tmp/evil.so"}}),
                 orjson.dumps({"task": "pooltest_tasks:add", "cwd": "/"}),
                 orjson.dumps({"task": "not a task"}), b" " * (2 << 20)):
        status, answer = post(body)
        assert status == 400 and answer["error"], body[:60]
    assert post(b"{}", Origin="http://evil.example")[0] == 403
    assert [s.id for s in Spool(spool_dir).statuses()] == [Spool(spool_dir).statuses()[0].id]  # the one job


# ---------------------------------------------------------------- the JSON API
def test_api_jobs_filters_pages_newest_first_and_answers_304_to_its_etag(spool_dir: Path, web: Any) -> None:
    made(spool_dir)  # no manager: the jobs wait in incoming/, and are listed as queued
    ids = [submitted(spool_dir, "--name", name, "--group", group, "pooltest_tasks:add", "1", "2")
           for name, group in (("render-1", "gpu"), ("render-2", "gpu"), ("encode-1", "cpu"))]
    server = web()
    every = server.json("/api/jobs")
    assert [row["id"] for row in every["rows"]] == ids[::-1]
    assert every["counts"]["queued"] == 3 and every["total"] == every["matched"] == 3
    assert [r["name"] for r in server.json("/api/jobs?name=render-*")["rows"]] == ["render-2", "render-1"]
    assert [r["name"] for r in server.json("/api/jobs?group=cpu")["rows"]] == ["encode-1"]
    assert [r["name"] for r in server.json("/api/jobs?text=ENCODE")["rows"]] == ["encode-1"]
    assert server.json("/api/jobs?state=done")["rows"] == []
    second = server.json("/api/jobs?per=1&page=2")
    assert ([r["id"] for r in second["rows"]], second["pages"]) == ([ids[1]], 3)
    for bad in ("state=bogus", "per=0", "page=-1", "per=x", "name=" + "x" * 300):
        status, _, body = server.call(f"/api/jobs?{bad}")
        assert status == 400 and orjson.loads(body)["error"], bad
    status, headers, _ = server.call("/api/jobs")
    assert server.call("/api/jobs", headers={"If-None-Match": headers["etag"]})[:1] == (304,)
    status, headers, body = server.call(f"/api/jobs/{ids[0]}")
    assert status == 200 and orjson.loads(body)["id"] == ids[0]
    assert server.call(f"/api/jobs/{ids[0]}", headers={"If-None-Match": headers["etag"]})[0] == 304


@pytest.mark.parametrize("path", ["/jobs/..%2f..%2fetc%2fpasswd", "/api/jobs/..%2f..%2fetc%2fpasswd",
                                  "/jobs/%2e%2e", "/api/jobs/.hidden", "/jobs/a%00b", "/api/jobs/" + "a" * 65,
                                  "/jobs/nosuchjob/log", "/api/jobs/nosuchjob/stream", "/jobs/%C3%A9t%C3%A9"])
def test_odd_ids_and_paths_out_of_the_spool_are_404(spool_dir: Path, web: Any, path: str) -> None:
    made(spool_dir)
    status, _, body = web().call(path)
    assert status == 404 and b"root:" not in body


def test_the_stream_sends_the_page_again_when_a_job_comes(spool_dir: Path, web: Any) -> None:
    made(spool_dir)
    server = web()
    request = urllib.request.Request(server.base + "/api/stream", headers={"Authorization": f"Bearer {server.token}"})
    pages: list[dict[str, Any]] = []
    response = urllib.request.urlopen(request, timeout=60)

    def read() -> None:
        with contextlib.suppress(OSError, http.client.HTTPException):
            for line in response:
                if line.startswith(b"data: "):
                    pages.append(orjson.loads(line[6:]))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_until(lambda: pages, what="the first page")
    assert pages[0]["total"] == 0
    job_id = submitted(spool_dir, "pooltest_tasks:add", "1", "2")
    wait_until(lambda: any(row["id"] == job_id for row in pages[-1]["rows"]), what="the page with the new job")
    server.stop()  # the stream ends with the server: the reader with it
    reader.join(30)


# ---------------------------------------------------------------- pure parts
def test_a_query_is_checked_before_any_job_is_read() -> None:
    assert Query.parse({}, ()) == Query()
    assert Query.parse({"page": "2", "per": "10", "name": " a* "}, ["done", "done"]) == \
        Query(("done",), "a*", page=2, per=10)
    for params, states in (({}, ["nope"]), ({"per": "501"}, []), ({"page": "0"}, []), ({"page": "\u0661"}, []),
                           ({"text": "x" * 201}, [])):
        with pytest.raises(BadQuery):
            Query.parse(params, states)


@pytest.mark.parametrize(("origin", "referer", "host", "same"), [
    (None, None, "127.0.0.1:8765", True),  # not a browser: it carried the token itself
    ("http://127.0.0.1:8765", None, "127.0.0.1:8765", True),
    (None, "http://127.0.0.1:8765/jobs/x", "127.0.0.1:8765", True),
    ("http://127.0.0.1:8766", None, "127.0.0.1:8765", False),
    ("http://evil.example", "http://127.0.0.1:8765/", "127.0.0.1:8765", False),  # the Origin is what counts
    ("null", None, "127.0.0.1:8765", False),
    ("file://127.0.0.1:8765", None, "127.0.0.1:8765", False),
    ("http://127.0.0.1:8765", None, None, False),
])
def test_same_origin(origin: str | None, referer: str | None, host: str | None, same: bool) -> None:
    assert access.same_origin(origin, referer, host) is same


def test_loopback_addresses() -> None:
    assert all(map(access.is_loopback, ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost"]))
    assert not any(map(access.is_loopback, ["0.0.0.0", "::", "192.168.1.2", "example.com", ""]))


def test_the_token_is_compared_whole() -> None:
    assert access.token_matches("abc", "abc") and access.token_matches(None, None)
    assert not any(access.token_matches(given, "abc") for given in (None, "", "ab", "abcd", "ABC"))
    assert access.bearer("Bearer abc") == "abc" and access.bearer("bearer  abc ") == "abc"
    assert access.bearer("Basic abc") is None and access.bearer(None) is None



# ---------------------------------------------------------------- /metrics and the charts
def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_metrics_say_jobs_by_state_and_group_what_ended_and_how_long_attempts_took(
        spool_dir: Path, serve: Any, web: Any) -> None:
    serve()
    done = [submitted(spool_dir, "--group", "g", "pooltest_tasks:add", "1", str(n)) for n in range(3)]
    failed = submitted(spool_dir, "--retries", "1", "pooltest_tasks:fail", "boom")
    for job_id in done:
        wait_until(lambda job_id=job_id: state_of(spool_dir, job_id) == "done", what="done")
    wait_until(lambda: state_of(spool_dir, failed) == "failed", what="failed")
    server = web()
    assert server.call("/metrics", token=False)[0] == 403
    status, headers, body = server.call("/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    values = metric_values(body.decode())
    assert values[("pool_jobs", (("group", "g"), ("state", "done")))] == 3
    assert values[("pool_jobs", (("group", "default"), ("state", "failed")))] == 1
    assert values[("pool_jobs_ended_total", (("state", "done"),))] == 3
    assert values[("pool_jobs_ended_total", (("state", "failed"),))] == 1
    assert values[("pool_attempts_total", ())] == 5  # the failed job's two attempts
    assert values[("pool_attempts_requeued_total", ())] == 1  # its retry
    assert values[("pool_attempt_duration_seconds_count", ())] == 5
    assert values[("pool_attempt_duration_seconds_bucket", (("le", "+Inf"),))] == 5
    assert values[("pool_queue_depth", ())] == 0 and values[("pool_running_jobs", ())] == 0
    assert values[("pool_manager_up", ())] == 1 and values[("pool_rejected_files", ())] == 0
    charts = server.json("/api/charts")
    assert sum(charts["done"]) == 3 and sum(charts["failed"]) == 1 and charts["depth"][-1] == 0
    assert len(charts["minutes"]) == len(charts["done"]) == len(charts["depth"]) == 180


def event_line(job_id: str, was: str | None, to: str, minute: str = "2026-12-06T10:00", wall: float | None = None
               ) -> bytes:
    event: dict[str, Any] = {"time": f"{minute}:00.000000Z", "id": job_id, "from": was, "to": to, "attempt": 1,
                             "reason": "x"}
    if wall is not None:
        event["usage"] = {"wall": wall}
    return orjson.dumps(event) + b"\n"


def test_the_tally_reads_on_from_where_it_stopped_across_a_rotation_and_starts_over_after_a_trim(
        tmp_path: Path) -> None:
    from pool.events import NAME, PREVIOUS
    from pool.web.history import History

    spool = Spool(made(tmp_path / "spool")).dir
    log = spool.root / NAME
    log.write_bytes(event_line("a", None, "queued") + event_line("a", "queued", "running")
                    + event_line("a", "running", "done", wall=0.2) + b'{"half": ')  # a line being appended
    history = History(spool)
    tally = history.update()
    assert (tally.ended["done"], tally.attempts, tally.duration_count) == (1, 1, 1)
    with open(log, "ab") as f:
        f.write(b'"written"}\n' + b"not json\n" + b"[1, 2]\n" + event_line("b", None, "queued"))
    assert history.update().ended["done"] == 1  # nothing counted twice; the junk skipped
    os.rename(log, spool.root / PREVIOUS)  # the manager rotates it ...
    with open(spool.root / PREVIOUS, "ab") as f:
        f.write(event_line("b", "queued", "running"))  # ... after one more line
    log.write_bytes(event_line("b", "running", "failed", wall=2.0))
    tally = history.update()
    assert (tally.ended["done"], tally.ended["failed"], tally.attempts, tally.duration_count) == (1, 1, 2, 2)
    assert history.update().attempts == 2
    log.write_bytes(event_line("c", None, "queued"))  # trimmed: what is kept is all there is
    (spool.root / PREVIOUS).unlink()
    tally = history.update()
    assert (tally.ended["done"], tally.attempts, sum(m.queued for m in tally.minutes.values())) == (0, 0, 1)


def test_the_queue_depth_is_counted_back_from_now() -> None:
    from datetime import datetime, timezone

    from pool.web.history import Tally, series

    tally = Tally()
    for line in (event_line("a", None, "queued", "2026-12-06T09:58"),
                 event_line("b", None, "queued", "2026-12-06T09:58"),
                 event_line("a", "queued", "running", "2026-12-06T09:59"),
                 event_line("a", "running", "done", "2026-12-06T10:00")):
        tally.add(orjson.loads(line))
    drawn = series(tally, 1, datetime(2026, 12, 6, 10, 0, 30, tzinfo=timezone.utc), 4)
    assert drawn["minutes"] == ["2026-12-06T09:57", "2026-12-06T09:58", "2026-12-06T09:59", "2026-12-06T10:00"]
    assert (drawn["depth"], drawn["done"]) == ([0, 2, 1, 1], [0, 0, 0, 1])


def test_a_signature_stamped_just_now_never_proves_nothing_changed(tmp_path: Path) -> None:
    """A folder's time ticks every few milliseconds: a second change within one tick
    leaves it as it was, so a look taken between the two must not be trusted later."""
    from pool.web.app import settled, signature

    folder = tmp_path / "status"
    folder.mkdir()
    (folder / "a.json").touch()
    assert not settled(signature([folder]))
    os.utime(folder, ns=(time.time_ns() - 10**9, time.time_ns() - 10**9))
    marks = signature([folder])
    assert settled(marks) and signature([folder]) == marks
    (folder / "b.json").touch()
    assert signature([folder]) != marks


def test_schedules_and_groups_are_shown_as_text(spool_dir: Path, web: Any) -> None:
    made(spool_dir)
    run_pool(spool_dir, "schedule", "add", "nightly", "--every", "1h", "--", "pooltest_tasks:add", "1", "2", check=True)
    run_pool(spool_dir, "group", "set", "gpu", "--parallel", "2", check=True)
    (spool_dir / "schedules" / "<i>bad.json").write_text("not json")
    server = web()
    assert sorted(s["name"] for s in server.json("/api/schedules")) == ["<i>bad", "nightly"]
    assert [g["name"] for g in server.json("/api/groups")] == ["gpu"]
    status, _, page = server.call("/schedules")
    assert status == 200 and b"nightly" in page and b"every 1h" in page and b">gpu<" in page
    assert b"<i>bad" not in page and b"&lt;i&gt;bad" in page  # a name is text


def test_open_hands_the_address_with_its_token_to_the_browser(spool_dir: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from webserver import Web

    made(spool_dir)
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f"#!/bin/sh\necho \"$1\" > {opened}\n")
    browser.chmod(0o755)
    monkeypatch.setenv("BROWSER", str(browser))  # webbrowser's choice, read by the process started below
    server = Web(spool_dir, "--open")
    try:
        wait_until(lambda: opened.exists() and opened.read_text().strip(), what="the browser opened")
        assert opened.read_text().strip() == server.url
    finally:
        server.stop()


def test_without_the_web_extra_it_says_how_to_get_it_in_one_line(spool_dir: Path, tmp_path: Path) -> None:
    made(spool_dir)
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "uvicorn.py").write_text("raise ImportError('No module named uvicorn')\n")  # as when not installed
    result = run_pool(spool_dir, "web", "--port", "0", env={"PYTHONPATH": str(shadow)})
    assert (result.returncode, result.stderr) == (1, "Error: pool web needs the web extra: "
                                                      "pip install 'spoolpool[web]'\n")
