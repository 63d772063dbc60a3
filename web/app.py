"""The dashboard's ASGI app (Starlette): pages, the JSON API, live streams, actions.

    GET  /                       the jobs page (filters and paging in its query)
    GET  /jobs/{id}              one job: every field, timeline, error, its log live
    GET  /jobs/{id}/log          the whole log, as a download
    GET  /api/jobs               a page of jobs as JSON (the same query), with an ETag
    GET  /api/jobs/{id}          the job's status document, with an ETag
    GET  /api/stream             the jobs page again each time it changes (server-sent events)
    GET  /api/jobs/{id}/stream   the job again as it changes, and its log as it grows
    GET  /api/charts             jobs ended and queue depth a minute, the last hours
    GET  /schedules              schedules, groups and machines (/api/schedules, /api/groups, /api/workers)
    GET  /metrics                the Prometheus text format (metrics.py)
    POST /api/jobs               submit a task: {"task": "module:function", "args": [...], ...}
    POST /api/jobs/{id}/{action} kill, retry, pause, resume (neither with --read-only)

The spool is read as `pool status` reads it, with or without a manager serving, in a
thread (a read of a big spool must not hold up the other streams). A stream looks at
two stats between sends: status/ and incoming/ change (a new name in them) whenever a
job is taken in, changes state or reports progress (each a new file renamed into
place); while a page shows a job running, it is sent again each second too (its
elapsed time and ETA move). An idle dashboard thus costs two stat() calls a quarter
second per open page. Every page and call is behind the token (access.py).
"""

from __future__ import annotations

import asyncio
import codecs
import dataclasses
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from pool.cli.common import log_pieces, read_log
from pool.cli.schedule import info_document
from pool.client import Spool
from pool.errors import InvalidJobSpec, JobNotFound, PoolError
from pool.events import NAME as EVENTS
from pool.finding import Brief
from pool.model import JobStatus, State

from . import access
from .history import QUEUED, History, series
from .metrics import CONTENT_TYPE, exposition
from .pages import BadQuery, Query, job_status, job_view, jobs_page

HERE = Path(__file__).parent
SETTLE_NS = 100_000_000  # a file time this recent may be stamped again by the next change
LOOK_EVERY = 0.25  # seconds between two looks at the spool's folders, per open stream
LIVE_EVERY = 1.0  # seconds between two sends of a page that shows a job not ended
PING_EVERY = 15.0  # seconds: a comment line keeps a quiet stream open through proxies
LOG_PIECE = 64 * 1024  # bytes of a log sent at a time
ACTIONS = ("kill", "retry", "pause", "resume")
MAX_SUBMIT = 1 << 20  # bytes of a job submitted from a page
CHART_MINUTES = 180  # the charts show the last three hours, a point a minute


def now() -> datetime:
    return datetime.now(timezone.utc)


def make_app(spool: Spool, token: str | None, read_only: bool = False) -> Starlette:
    pages = Dashboard(spool, read_only)
    routes = [
        Route("/", pages.jobs),
        Route("/jobs/{job_id}", pages.job),
        Route("/jobs/{job_id}/log", pages.download_log),
        Route("/api/jobs", pages.api_jobs),
        Route("/api/jobs", pages.submit, methods=["POST"]),
        Route("/api/jobs/{job_id}", pages.api_job),
        Route("/api/stream", pages.stream_jobs),
        Route("/api/jobs/{job_id}/stream", pages.stream_job),
        Route("/api/jobs/{job_id}/{action}", pages.act, methods=["POST"]),
        Route("/api/charts", pages.charts),
        Route("/schedules", pages.schedules_and_groups),
        Route("/api/schedules", pages.api_schedules),
        Route("/api/groups", pages.api_groups),
        Route("/api/workers", pages.api_workers),
        Route("/metrics", pages.metrics),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(TokenGate, token=token)
    return app


class Dashboard:
    """The endpoints, over one spool."""

    def __init__(self, spool: Spool, read_only: bool) -> None:
        self.spool = spool
        self.read_only = read_only
        self.watched = [spool.dir.status_dir, spool.dir.incoming]  # a job taken in, changed, reporting
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))  # autoescaping .html: names are text
        self.history = History(spool.dir)
        # Every job's brief, as last read, and the folders' signature then: the pages and
        # streams open at once share one read (a read of 100,000 jobs takes 0.7 s), and
        # a look at an unchanged spool reads nothing. A job's row is read whole, fresh.
        self.briefs_lock = threading.Lock()
        self.briefs_read: tuple[tuple[int, ...], list[Brief]] | None = None

    def page(self, request: Request, template: str, **context: Any) -> Response:
        return self.templates.TemplateResponse(request, template, {"spool": str(self.spool.path),
                                                                   "read_only": self.read_only, **context})

    async def found(self, job_id: str) -> bool:
        try:
            await run_in_threadpool(job_status, self.spool, job_id)
        except JobNotFound:
            return False
        return True

    def briefs(self) -> list[Brief]:
        with self.briefs_lock:
            marks = signature(self.watched)
            if self.briefs_read is None or self.briefs_read[0] != marks or not settled(marks):
                self.briefs_read = (marks, self.spool.briefs())
            return self.briefs_read[1]

    def page_of(self, query: Query) -> dict[str, Any]:
        return jobs_page(self.spool, query, now(), self.briefs())

    async def jobs(self, request: Request) -> Response:
        try:
            query_of(request)
        except BadQuery as exc:
            return PlainTextResponse(str(exc), 400)
        return self.page(request, "jobs.html")

    async def job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if not await self.found(job_id):
            return PlainTextResponse("no such job", 404)
        return self.page(request, "job.html", job_id=job_id)

    async def api_jobs(self, request: Request) -> Response:
        try:
            query = query_of(request)
        except BadQuery as exc:
            return JSONResponse({"error": str(exc)}, 400)
        found = await run_in_threadpool(self.page_of, query)
        return tagged(request, orjson.dumps(found))

    async def api_job(self, request: Request) -> Response:
        try:
            status = await run_in_threadpool(job_status, self.spool, request.path_params["job_id"])
        except JobNotFound:
            return JSONResponse({"error": "no such job"}, 404)
        return tagged(request, orjson.dumps(status.to_dict()))

    async def stream_jobs(self, request: Request) -> Response:
        try:
            query = query_of(request)
        except BadQuery as exc:
            return JSONResponse({"error": str(exc)}, 400)

        def look() -> tuple[bytes, bool]:
            found = self.jobs_with_charts(query)
            return orjson.dumps(found), any(row["state"] == "running" for row in found["rows"])

        return sse(named("jobs", changes(look, self.watched)))

    async def stream_job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if not await self.found(job_id):
            return JSONResponse({"error": "no such job"}, 404)

        def look() -> tuple[bytes, bool]:
            status = job_status(self.spool, job_id)
            return orjson.dumps(job_view(self.spool, status, now())), status.state is State.RUNNING

        watched = [self.spool.dir.status_dir, self.spool.dir.root / EVENTS]
        return sse(merged(named("job", changes(look, watched)), named("log", log_stream(self.spool, job_id))))

    async def download_log(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if not await self.found(job_id):
            return PlainTextResponse("no such job", 404)
        data = await run_in_threadpool(read_log, self.spool, job_id)
        return Response(data, media_type="text/plain; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{job_id}.log"'})

    def jobs_with_charts(self, query: Query) -> dict[str, Any]:
        """A page of jobs, and the charts of the last hours (history.py)."""
        found = self.page_of(query)
        depth = sum(found["counts"][state] for state in QUEUED)
        found["charts"] = series(self.history.update(), depth, now(), CHART_MINUTES)
        return found

    async def charts(self, request: Request) -> Response:
        briefs = await run_in_threadpool(self.briefs)
        tally = await run_in_threadpool(self.history.update)
        depth = sum(1 for b in briefs if b.state.value in QUEUED)
        return tagged(request, orjson.dumps(series(tally, depth, now(), CHART_MINUTES)))

    def schedule_documents(self) -> list[dict[str, Any]]:
        return [{**info_document(info), "when": info.schedule.when if info.schedule else None}
                for info in self.spool.schedules()]

    def group_documents(self) -> list[dict[str, Any]]:
        return [dataclasses.asdict(info) for info in self.spool.groups()]

    def worker_documents(self) -> list[dict[str, Any]] | None:
        """The machines of --engine celery, as the hub says them (`pool workers`); None
        when jobs run on the hub's own machine, or no manager serves."""
        serving = self.spool.dir.serving()
        return serving.hosts if serving is not None else None

    async def schedules_and_groups(self, request: Request) -> Response:
        schedules = await run_in_threadpool(self.schedule_documents)
        groups = await run_in_threadpool(self.group_documents)
        workers = await run_in_threadpool(self.worker_documents)
        return self.page(request, "schedules.html", schedules=schedules, groups=groups, workers=workers)

    async def api_workers(self, request: Request) -> Response:
        return tagged(request, orjson.dumps(await run_in_threadpool(self.worker_documents)))

    async def api_schedules(self, request: Request) -> Response:
        return tagged(request, orjson.dumps(await run_in_threadpool(self.schedule_documents)))

    async def api_groups(self, request: Request) -> Response:
        return tagged(request, orjson.dumps(await run_in_threadpool(self.group_documents)))

    async def metrics(self, request: Request) -> Response:
        body = await run_in_threadpool(exposition, self.spool, self.history, self.briefs)
        return Response(body, media_type=CONTENT_TYPE)

    async def submit(self, request: Request) -> Response:
        """A task job, as a job file holds it (args, kwargs, name, group, priority, retries,
        after...): a command (any program) is not offered here, and a task job takes no
        environment or directory (the job rules refuse them), only what the manager
        serves (it refuses any other task at intake)."""
        if self.read_only:
            return JSONResponse({"error": "this dashboard is read-only (pool web --read-only)"}, 403)
        body = await request.body()
        try:
            if len(body) > MAX_SUBMIT:
                raise InvalidJobSpec(f"the job is over {MAX_SUBMIT} bytes")
            doc = orjson.loads(body)
            if not isinstance(doc, dict) or not isinstance(doc.get("task"), str) or "command" in doc:
                raise InvalidJobSpec('send a task job: a JSON object with "task": "module:function"')
            job = await run_in_threadpool(self.spool.submit_job, doc)
        except orjson.JSONDecodeError as exc:
            return JSONResponse({"error": f"not JSON: {exc}"}, 400)
        except PoolError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse({"id": job.id}, 201)

    async def act(self, request: Request) -> Response:
        if self.read_only:
            return JSONResponse({"error": "this dashboard is read-only (pool web --read-only)"}, 403)
        job_id, action = request.path_params["job_id"], request.path_params["action"]
        if action not in ACTIONS:
            return JSONResponse({"error": f"no action {action!r}"}, 404)
        if not await self.found(job_id):
            return JSONResponse({"error": "no such job"}, 404)
        try:
            status = await run_in_threadpool(self.carry_out, action, job_id)
        except PoolError as exc:
            return JSONResponse({"error": str(exc)}, 409)
        return JSONResponse(status.to_dict())

    def carry_out(self, action: str, job_id: str) -> JobStatus:
        """As `pool kill`, `pool retry`, `pool pause`, `pool resume` do it."""
        if action == "kill":
            return self.spool.cancel(job_id)
        if action == "retry":
            return self.spool.retry(job_id)
        return self.spool.pause(job_id) if action == "pause" else self.spool.resume(job_id)


def query_of(request: Request) -> Query:
    return Query.parse(request.query_params, request.query_params.getlist("state"))


def tagged(request: Request, body: bytes) -> Response:
    """JSON with an ETag: a caller that has this very body already gets 304 and no body."""
    etag = '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag in [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def sse(events: AsyncIterator[bytes]) -> Response:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def signature(paths: list[Path]) -> tuple[int, ...]:
    """What changes when a name comes or goes in a folder, or a file grows: times, inodes,
    sizes. A time stamped within SETTLE_NS of now may be stamped again, unchanged, by the
    next change (a file system's clock ticks every few milliseconds): such a signature
    ends in 0, and one equal to it never proves that nothing changed (``settled``)."""
    marks: list[int] = []
    clock = time.time_ns()
    fresh = False
    for path in paths:
        try:
            st = os.stat(path)
            marks += [st.st_mtime_ns, st.st_ino, st.st_size]
            fresh = fresh or clock - st.st_mtime_ns < SETTLE_NS
        except OSError:
            marks += [0, 0, 0]
    return (*marks, 0 if fresh else 1)


def settled(marks: tuple[int, ...] | None) -> bool:
    return marks is not None and marks[-1] == 1


async def changes(look: Callable[[], tuple[bytes, bool]], paths: list[Path]) -> AsyncIterator[bytes]:
    """``look()``'s data each time it differs from the last sent: looked at again when
    one of ``paths`` changed (a folder's names, a file's size or time) or was not
    settled, or each LIVE_EVERY seconds while ``look`` said something moves (b"": a ping
    is due)."""
    sent, marks, looked_at, moving, pinged = b"", None, 0.0, True, time.monotonic()
    while True:
        now_marks, clock = signature(paths), time.monotonic()
        if now_marks != marks or not settled(marks) or (moving and clock - looked_at >= LIVE_EVERY):
            marks, looked_at = now_marks, clock
            try:
                data, moving = await run_in_threadpool(look)
            except JobNotFound:
                return
            if data != sent:
                sent = data
                yield data
                pinged = clock
        if clock - pinged >= PING_EVERY:
            pinged = clock
            yield b""
        await asyncio.sleep(LOOK_EVERY)


async def log_stream(spool: Spool, job_id: str) -> AsyncIterator[bytes]:
    """The job's log as text, piece by piece as it grows, until the job has ended."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pieces = log_pieces(spool, job_id)
    while True:
        try:
            piece = await run_in_threadpool(next, pieces, None)
        except JobNotFound:  # removed meanwhile: its log went with it
            piece = None
        if piece is None:
            tail = decoder.decode(b"", final=True)
            if tail:
                yield orjson.dumps(tail)
            return
        if piece:
            for start in range(0, len(piece), LOG_PIECE):
                yield orjson.dumps(decoder.decode(piece[start:start + LOG_PIECE]))
        else:
            await asyncio.sleep(LOOK_EVERY)


async def named(event: str, data: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Each piece of ``data`` as an SSE event named ``event`` (b"": a comment, to keep the
    stream open); once ``data`` ends, an ``end`` event of that name."""
    async for piece in data:
        yield f"event: {event}\ndata: ".encode() + piece + b"\n\n" if piece else b": ping\n\n"
    yield f"event: {event}-end\ndata: {{}}\n\n".encode()


async def merged(*streams: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The pieces of every stream as each comes, until all have ended."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=16)

    async def pump(stream: AsyncIterator[bytes]) -> None:
        try:
            async for piece in stream:
                await queue.put(piece)
        finally:
            await queue.put(None)

    tasks = [asyncio.ensure_future(pump(stream)) for stream in streams]
    try:
        running = len(tasks)
        while running:
            piece = await queue.get()
            if piece is None:
                running -= 1
            else:
                yield piece
    finally:
        for task in tasks:
            task.cancel()


class TokenGate:
    """Lets through what carries the token (access.py), and a state change only from the
    dashboard's own pages; trades a token in the address for a cookie."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        in_address = request.query_params.get("token")
        by_header = access.bearer(request.headers.get("authorization"))
        by_cookie = request.cookies.get(access.COOKIE)
        if in_address is not None and access.token_matches(in_address, self.token) and request.method == "GET":
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + ("?" + urlencode(rest) if rest else "")
            response: Response = RedirectResponse(target, 303)
            response.set_cookie(access.COOKIE, in_address, httponly=True, samesite="strict", path="/")
            await response(scope, receive, send)
            return
        by_program = by_header is not None and access.token_matches(by_header, self.token)
        if not by_program and not access.token_matches(by_cookie, self.token):
            await denied("open the address `pool web` printed, with its token", request)(scope, receive, send)
            return
        if request.method not in ("GET", "HEAD"):
            # A browser says where a request comes from; one that does not must be a program
            # with the token in its header, which no page of another site can send.
            origin, referer = request.headers.get("origin"), request.headers.get("referer")
            if (not by_program and origin is None and referer is None) or \
                    not access.same_origin(origin, referer, request.headers.get("host")):
                await denied("a change must come from the dashboard's own page", request)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def denied(why: str, request: Request) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": f"forbidden: {why}"}, 403)
    return PlainTextResponse(f"pool web: forbidden: {why}\n", 403)

