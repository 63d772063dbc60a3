"""Shared test helpers: a real ``pool serve`` on a temp spool, the CLI as a subprocess,
one way to wait: ``wait_until(predicate, timeout, what)`` (no test sleeps to sync), and
one way to say what a test needs from the machine: ``needs_root`` and ``needs_strace``."""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import orjson
import pytest

from pool.client import Spool
from waiting import wait_until  # noqa: F401  (the one way tests wait, see waiting.py: imported from here)

TESTS = Path(__file__).parent

# A shell starts a background command (`cmd &`) with SIGINT ignored, and ignored signals
# stay ignored across exec: the pool processes the tests start would shrug off the Ctrl-C
# some tests press. A handler of our own is reset to the default in them.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
POOL = [sys.executable, "-m", "pool"]


def env_for_tests(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env.pop("POOL_SPOOL", None)
    env.update(extra)
    return env


def run_pool(spool: Path, *args: str, check: bool = False, timeout: float = 60, env: dict[str, str] | None = None,
             **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, in its own process (``env``: more of its environment)."""
    result = subprocess.run([*POOL, "--spool", str(spool), *args], capture_output=True, text=True,
                            env=env_for_tests(**(env or {})), timeout=timeout, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"pool {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


class Server:
    """A real ``pool serve`` process on a spool (``new_session``: leading a process group of
    its own, as a manager started from a terminal)."""

    def __init__(self, spool: Path, *args: str, cwd: Path = TESTS, log_dir: Path | None = None,
                 new_session: bool = False) -> None:
        self.spool = spool
        self.args = args
        self.cwd = cwd
        self.new_session = new_session
        self.log = (log_dir or spool.parent) / f"serve-{spool.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> Server:
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [*POOL, "--spool", str(self.spool), "serve", "--tasks", "pooltest_tasks", "--settle", "0.2", *self.args],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env_for_tests(), cwd=str(self.cwd),
            start_new_session=self.new_session)
        log.close()
        if wait:
            wait_until(lambda: self.ready() or self.proc.poll() is not None, 30, "the manager to start")
            assert self.proc.poll() is None, f"pool serve exited early:\n{self.output()}"
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def ready(self) -> bool:
        pid_file = self.spool / "manager.pid"
        return self.proc is not None and pid_file.exists() and pid_file.read_text() == str(self.proc.pid)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"pool serve did not stop within {timeout}s:\n{self.output()}") from None


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def made(spool_dir: Path) -> Path:
    """Make the spool, as `pool serve` does, and serve nothing: only `pool serve` (and
    `pool run`, with nobody serving) make a spool; a job submitted to one not made is
    refused, so that a mistyped --spool makes no spool nobody serves."""
    Spool(spool_dir).dir.create()
    return spool_dir


@pytest.fixture
def spool(spool_dir: Path) -> Spool:
    return Spool(spool_dir)


# Where attempts run: local workers, and the relay engine (tests/relay_engine.py), whose
# attempts never touch the spool and report only through the executor protocol. A test
# marked `every_engine` runs once with each, through the `serve` fixture.
ENGINES = {"local": "local", "relay": "relay_engine:RelayExecutor"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("every_engine"):
        metafunc.parametrize("engine", list(ENGINES))


@pytest.fixture
def engine() -> str:
    return "local"


@pytest.fixture
def serve(spool_dir: Path, engine: str) -> Iterator[Callable[..., Server]]:
    """Start ``pool serve`` with extra arguments (on the test's engine); every server is
    stopped afterwards."""
    servers: list[Server] = []

    def start(*args: str, wait: bool = True, new_session: bool = False) -> Server:
        server = Server(spool_dir, "--engine", ENGINES[engine], *args, new_session=new_session).start(wait=wait)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.proc and server.proc.poll() is None:
            server.stop()


@pytest.fixture
def web(spool_dir: Path) -> Iterator[Callable[..., Any]]:
    """Start `pool web` on the test's spool with extra arguments (tests/webserver.py);
    each is stopped afterwards."""
    from webserver import Web

    started: list[Web] = []

    def start(*args: str) -> Web:
        server = Web(spool_dir, *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def refused(spool_dir: Path, name: str, timeout: float = 30.0, also: Callable[[], object] = lambda: True) -> str:
    """Wait until ``name`` is in rejected/ with why (``also``: and until that holds too);
    return why. Intake writes why first and moves the file beside it after: both are
    awaited, or a test could read between the two (a CI failure at 96331fe)."""
    rejected = spool_dir / "rejected"
    wait_until(lambda: (rejected / f"{name}.error.json").exists() and os.path.lexists(rejected / name) and also(),
               timeout, f"{name} rejected")
    return str(orjson.loads((rejected / f"{name}.error.json").read_bytes())["reason"])


def log_text(spool_dir: Path, job_id: str) -> str:
    """What the job printed so far, read as `pool logs` reads it (logs/<id>.log)."""
    return Spool(spool_dir).job(job_id).logs()


def drop(spool_dir: Path, name: str, content: bytes | dict[str, Any] | str) -> Path:
    """Write a job file into incoming/ the safe way (write elsewhere, then rename)."""
    incoming = spool_dir / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    data = orjson.dumps(content) if isinstance(content, dict) else content.encode() if isinstance(content, str) else content
    tmp = incoming / f".{name}.tmp"
    tmp.write_bytes(data)
    os.rename(tmp, incoming / name)
    return incoming / name


def status_doc(spool_dir: Path, job_id: str) -> dict[str, Any] | None:
    try:
        return orjson.loads((spool_dir / "status" / f"{job_id}.json").read_bytes())  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None


def state_of(spool_dir: Path, job_id: str) -> str | None:
    doc = status_doc(spool_dir, job_id)
    return doc["state"] if doc else None


def job(task: str, *args: object, **fields: object) -> dict[str, object]:
    """A job file's content: ``task`` of the test tasks (tests/pooltest_tasks.py)."""
    return {"task": f"pooltest_tasks:{task}", "args": list(args), **fields}


def running_pid(spool_dir: Path, job_id: str) -> int:
    """Wait until the job's status says running; returns its pid."""
    return wait_until(lambda: (d := status_doc(spool_dir, job_id)) and d["state"] == "running" and d["pid"],  # type: ignore[no-any-return]
                      30, f"{job_id} running")


def start_running(spool_dir: Path, job_id: str, task: str, *args: object) -> int:
    """Drop a job of the test tasks and wait until its status says running; returns its pid."""
    drop(spool_dir, f"{job_id}.json", job(task, *args, id=job_id))
    return running_pid(spool_dir, job_id)


def runs_of(runs_file: Path) -> collections.Counter[str]:
    """How many times each job ran, from the file the counting tasks append their ids to."""
    return collections.Counter(runs_file.read_text().split()) if runs_file.exists() else collections.Counter()


def events_of(spool_dir: Path, job_id: str) -> list[dict[str, Any]]:
    """The job's lines in events.jsonl."""
    path = spool_dir / "events.jsonl"
    lines = path.read_bytes().splitlines() if path.exists() else []
    return [e for e in map(orjson.loads, lines) if e["id"] == job_id]


def start_run(spool_dir: Path, *args: str) -> subprocess.Popen[str]:
    """``pool run ARGS`` in the background, its output captured."""
    return subprocess.Popen([*POOL, "--spool", str(spool_dir), "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env_for_tests())


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process descended from it (the manager, its forkserver, its workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], []))
    return tree


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ---------------------------------------------------------------- what a test needs from the machine

CHROMIUM = "/usr/bin/chromium"  # Debian's, driven by Playwright (its own download cannot work here)


class Need(NamedTuple):
    what: str
    lacking: Callable[[], str | None]  # what this machine lacks, None when the need is met
    how: str  # what a contributor does to run the test


# A test declares what it needs with a marker and why: ``@pytest.mark.needs_root("to mount
# a tmpfs")``. A contributor without it sees the test skipped with that reason; CI proves
# every test, so where CI is set a need not met fails the test instead.
NEEDS = {
    "needs_root": Need("root", lambda: None if os.geteuid() == 0 else f"this runs as uid {os.geteuid()}",
                       "run as root to run it here"),
    "needs_strace": Need("strace", lambda: None if shutil.which("strace") else "there is no strace on PATH",
                         "install strace to run it here"),
    "needs_systemd_analyze": Need("systemd-analyze", lambda: None if shutil.which("systemd-analyze")
                                  else "there is no systemd-analyze on PATH", "install systemd to run it here"),
    "needs_gnu_time": Need("GNU time", lambda: None if os.access("/usr/bin/time", os.X_OK)
                           else "there is no /usr/bin/time", "install GNU time (the package `time`) to run it here"),
    "needs_redis_server": Need("redis-server", lambda: None if os.access("/usr/bin/redis-server", os.X_OK)
                               else "there is no /usr/bin/redis-server",
                               "install it (Debian: apt-get install redis-server) to run it here"),
    "needs_chromium": Need("Chromium", lambda: None if os.access(CHROMIUM, os.X_OK) else f"there is no {CHROMIUM}",
                           "install Chromium (Debian: apt-get install chromium) to run it here"),
}


def unmet_needs(item: pytest.Item) -> list[tuple[str, str]]:
    """Each need of ``item`` this machine does not meet: (why a contributor skips it, why CI fails it)."""
    unmet = []
    for marker_name, need in NEEDS.items():
        for marker in item.iter_markers(marker_name):
            assert len(marker.args) == 1, f"{item.nodeid}: @pytest.mark.{marker_name} takes why ('to mount a tmpfs')"
            lacking = need.lacking()
            if lacking is not None:
                said = f"needs {need.what} ({marker.args[0]})"
                unmet.append((f"{said}: CI runs it; {need.how}",
                              f"{said}, but {lacking}: CI is set, and CI must run every test"))
    return unmet


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A skip mark rather than a skip raised in setup: the summary then names the test's own line.
    if not in_ci():
        for item in items:
            for skip, _ in unmet_needs(item):
                item.add_marker(pytest.mark.skip(reason=skip))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before any fixture: theirs would fail with a less useful message (mount, useradd).
    if in_ci():
        for _, failure in unmet_needs(item):
            pytest.fail(failure, pytrace=False)


# ---------------------------------------------------------------- a small real disk

def mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


needs_small_disk = pytest.mark.needs_root("to mount a 4 MB tmpfs")


@pytest.fixture
def small_disk(tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A real 4 MB filesystem; a test using it is marked ``@needs_small_disk``."""
    assert request.node.get_closest_marker("needs_root"), "small_disk mounts a tmpfs: mark the test @needs_small_disk"
    assert shutil.which("mount"), "a small real filesystem needs mount"
    disk = tmp_path / "disk"
    assert mount_tmpfs(disk, "4m"), "could not mount a 4 MB tmpfs"
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler
