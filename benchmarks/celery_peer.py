"""Celery, prefork pool of 2, with a real redis-server as broker and result backend: the
throughput peer of peers.py.

    python celery_peer.py JOBS

Starts a redis-server of its own on a free loopback port (no persistence: Redis at its
fastest, which also means a restart of it loses every queued task), a Celery worker, one
task through them both first (so that what is timed is serving, not starting), then times
JOBS do-nothing tasks from the first ``delay()`` to the last result. Prints one JSON line:
``{"seconds": ..., "lost": ..., "failed": ...}``: a task whose result never came is lost,
one that raised (in the caller or the worker) failed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import orjson
import redis
from celery import Celery
from celery.exceptions import TimeoutError as ResultTimeout

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("celery_peer", broker=URL, backend=URL)
app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)


@app.task
def noop() -> int:
    return 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_redis(folder: str, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server with no persistence (a restart forgets everything), on ``port`` or a free one."""
    port = port or free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", folder], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("redis-server did not start") from None
            time.sleep(0.01)
    return server, f"redis://127.0.0.1:{port}/0"


def run(jobs: int) -> dict[str, float]:
    folder = tempfile.mkdtemp(prefix="celery-bench-")
    server, url = start_redis(folder)
    env = dict(os.environ, BENCH_REDIS_URL=url)
    worker_log = open(os.path.join(folder, "worker.log"), "wb")  # noqa: SIM115 - the worker's, closed after it
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "celery_peer", "worker", "--pool", "prefork",
                               "--concurrency", "2", "--without-gossip", "--without-mingle", "--without-heartbeat",
                               "--loglevel", "WARNING"], env=env, cwd=os.path.dirname(os.path.abspath(__file__)),
                              stdout=subprocess.DEVNULL, stderr=worker_log)
    app.conf.broker_url = app.conf.result_backend = url
    try:
        noop.delay().get(timeout=60)
        started = time.perf_counter()
        lost = failed = 0
        results = []
        for _ in range(jobs):
            try:
                results.append(noop.delay())
            except Exception:
                failed += 1
        deadline = time.monotonic() + 120
        for result in results:
            try:
                result.get(timeout=max(0.1, deadline - time.monotonic()))
            except ResultTimeout:
                lost += 1
            except Exception:
                failed += 1
        return {"seconds": time.perf_counter() - started, "lost": lost, "failed": failed}
    finally:
        worker.send_signal(signal.SIGTERM)  # Celery's warm shutdown, its pool with it
        worker.wait(timeout=60)
        server.terminate()
        server.wait(timeout=30)
        worker_log.close()


if __name__ == "__main__":
    print(orjson.dumps(run(int(sys.argv[1]))).decode())
