"""`pool web` over a spool of many jobs: each page and call timed as a client sees it,
how far behind the live stream runs, and what an idle dashboard with a page open costs.

    python benchmarks/web_pages.py [--jobs 10000 100000] [--rounds 5] [--idle 20]

The spool is filled as benchmarks/status_listing.py fills it (finished jobs, with their
lines in status/index.final), then a real `pool web` serves it and a client (this
process) calls it over HTTP with the token, in rounds: the jobs page (its HTML, then the
first event of its stream, which carries the rows: what a person waits for), the API's
first and last page, a filter that matches nothing (every job looked at), a text
search, one job, and /metrics. Reported: median and worst in ms; a target is met only
when every round meets it. Live: a job file dropped into incoming/ (no manager: it is
listed as queued), timed until the open stream carries it. Idle: a stream open, nothing
changing, the CPU the `pool web` process used over ``--idle`` seconds (/proc).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from status_listing import fill

TARGET_MS = 1000.0


class Dashboard:
    def __init__(self, spool: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "pool", "--spool", str(spool), "web", "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     cwd=tempfile.gettempdir())
        assert self.proc.stdout is not None
        url = self.proc.stdout.readline().split(" at ", 1)[1].strip()
        self.base, self.token = url.split("?", 1)[0].rstrip("/"), url.split("token=", 1)[1]

    def request(self, path: str) -> urllib.request.Request:
        return urllib.request.Request(self.base + path, headers={"Authorization": f"Bearer {self.token}"})

    def get(self, path: str) -> tuple[float, bytes]:
        started = time.perf_counter()
        with urllib.request.urlopen(self.request(path), timeout=120) as response:
            body = response.read()
        return (time.perf_counter() - started) * 1000, body

    def first_event(self, path: str) -> float:
        started = time.perf_counter()
        with urllib.request.urlopen(self.request(path), timeout=120) as response:
            for line in response:
                if line.startswith(b"data: "):
                    return (time.perf_counter() - started) * 1000
        raise AssertionError("the stream ended before its first event")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def live_lag(dashboard: Dashboard, spool: Path, rounds: int) -> list[float]:
    """ms from a job file's rename into incoming/ to the stream's event that lists it."""
    lags: list[float] = []
    seen: dict[str, float] = {}
    response = urllib.request.urlopen(dashboard.request("/api/stream"), timeout=120)

    def read() -> None:
        with contextlib.suppress(OSError, ValueError, AttributeError):  # the stream closed under it at the end
            for line in response:
                if line.startswith(b"data: "):
                    for row in orjson.loads(line[6:])["rows"]:
                        seen.setdefault(row["id"], time.perf_counter())

    threading.Thread(target=read, daemon=True).start()
    for n in range(rounds):
        job_id = f"live{n}"
        tmp = spool / "incoming" / f".{job_id}.tmp"
        tmp.write_bytes(orjson.dumps({"task": "m:f", "id": job_id}))
        dropped = time.perf_counter()
        os.rename(tmp, spool / "incoming" / f"{job_id}.json")
        deadline = dropped + 30
        while job_id not in seen and time.perf_counter() < deadline:
            time.sleep(0.005)
        lags.append((seen.get(job_id, float("inf")) - dropped) * 1000)
    response.close()
    return lags


def idle_percent(dashboard: Dashboard, seconds: float) -> float:
    response = urllib.request.urlopen(dashboard.request("/api/stream"), timeout=120)
    response.readline()  # the stream is open and has sent its first event
    time.sleep(1.0)  # its first page is built: what follows is the idle cost
    before, started = dashboard.cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    used = dashboard.cpu_seconds() - before
    response.close()
    return used / (time.monotonic() - started) * 100


def report(name: str, times: list[float]) -> str:
    met = "met" if max(times) <= TARGET_MS else "NOT met"
    return f"  {name:<34} median {statistics.median(times):7.1f} ms, worst {max(times):7.1f} ms  ({met})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--idle", type=float, default=20.0, help="Seconds the idle dashboard is watched.")
    args = parser.parse_args()
    for jobs in args.jobs:
        with tempfile.TemporaryDirectory() as scratch:
            spool = fill(Path(scratch) / "spool", jobs).root
            dashboard = Dashboard(spool)
            try:
                calls: dict[str, Any] = {
                    "the jobs page (HTML)": lambda: dashboard.get("/")[0],
                    "its rows (the stream's first event)": lambda: dashboard.first_event("/api/stream"),
                    "/api/jobs (page 1)": lambda: dashboard.get("/api/jobs")[0],
                    "/api/jobs (the last page)": lambda: dashboard.get(f"/api/jobs?page={jobs // 50}")[0],
                    "/api/jobs?state=failed (none)": lambda: dashboard.get("/api/jobs?state=failed")[0],
                    "/api/jobs?text=j9999": lambda: dashboard.get("/api/jobs?text=j9999")[0],
                    "/api/jobs/<id>": lambda: dashboard.get("/api/jobs/j1")[0],
                    "a job's page (HTML)": lambda: dashboard.get("/jobs/j1")[0],
                    "a job's stream, its first event": lambda: dashboard.first_event("/api/jobs/j1/stream"),
                    "/metrics": lambda: dashboard.get("/metrics")[0],
                }
                times: dict[str, list[float]] = {name: [] for name in calls}
                for _ in range(args.rounds):
                    for name, call in calls.items():
                        times[name].append(call())
                print(f"{jobs} finished jobs, {args.rounds} rounds:")
                for name, values in times.items():
                    print(report(name, values))
                # Idle first: the live jobs stay queued (no manager), and a page of them is still idle.
                print(f"  idle, a page's stream open: {idle_percent(dashboard, args.idle):.2f}% of a core "
                      f"over {args.idle:g} s")
                print(report("live: a new job in the open stream", live_lag(dashboard, spool, args.rounds)))
            finally:
                dashboard.stop()


if __name__ == "__main__":
    main()
