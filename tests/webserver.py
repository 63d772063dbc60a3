"""A real `pool web` process for the dashboard's tests, and plain HTTP calls to it."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from conftest import POOL, TESTS, env_for_tests


class Web:
    """``pool web --port 0`` on a spool: its address and token, read from what it printed."""

    def __init__(self, spool: Path, *args: str) -> None:
        self.proc = subprocess.Popen([*POOL, "--spool", str(spool), "web", "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     text=True, env=env_for_tests(), cwd=str(TESTS))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the address: printed once it listens
        assert line.startswith("pool web: "), f"pool web said {line!r}: {self.proc.communicate(timeout=30)}"
        self.url = line.split(" at ", 1)[1].strip()
        self.base = self.url.split("?", 1)[0].rstrip("/")
        self.token = self.url.split("token=", 1)[1] if "token=" in self.url else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def call(self, path: str, method: str = "GET", token: bool = True, headers: dict[str, str] | None = None,
             ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of one request; with the token as a program sends it."""
        sent = dict(headers or {})
        if token and self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.base + path, method=method, headers=sent,
                                         data=b"" if method == "POST" else None)
        try:
            with NO_REDIRECTS.open(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, path: str) -> Any:
        status, _, body = self.call(path)
        assert status == 200, (status, body)
        return orjson.loads(body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the test looks at the redirect itself


NO_REDIRECTS = urllib.request.build_opener(_NoRedirect)
