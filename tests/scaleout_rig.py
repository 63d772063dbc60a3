"""Several machines on one: a real redis-server on a free loopback port, `pool worker`
processes each with its own name and --workdir, standing for the machines, and a hub
(`pool serve --engine celery`) on the test's spool."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path

from conftest import POOL, TESTS, env_for_tests, wait_until

REDIS = "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A redis-server of its own: no persistence (a restart forgets everything)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        self.proc = subprocess.Popen([REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.folder)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.answers, 30, "redis-server to answer")
        return self

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Worker:
    """`pool worker` standing for one machine, leading a process group of its own."""

    def __init__(self, broker: Broker, name: str, folder: Path, *args: str) -> None:
        self.name = name
        self.workdir = folder / f"machine-{name}"
        self.log = folder / f"worker-{name}.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([*POOL, "worker", "--broker", broker.url, "--name", name,
                                          "--workdir", str(self.workdir), *args],
                                         stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env_for_tests(),
                                         cwd=str(TESTS), start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """Everything of it gone, its jobs too: a test's machine leaves nothing behind."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def announced(broker: Broker, *names: str) -> bool:
    """Every one of ``names`` has announced itself to the broker (it is ready for jobs)."""
    import redis

    db = redis.Redis.from_url(broker.url)
    try:
        return all(db.exists(f"pool:worker:{name}") for name in names)
    finally:
        db.close()
