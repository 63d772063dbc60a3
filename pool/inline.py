"""Running one job without a manager: subprocess stays the fallback.

    pool run / Spool.run / submit(fallback="inline"), no manager serving the spool:
        the caller takes the job's inline hold (status/<id>.inline), writes the
        queued status, and starts an inline manager with the hold:
    python -m pool.inline SPOOL ID --hold-fd=N   runs the manager's own loop (pool/manager.py)
        for this one job: its executor with one worker (forked: an inline manager has no
        thread), its timeouts, its kill policy and grace, its retries and events; it
        exits once the job is final

So `pool status`, `pool logs` and `pool kill` work the same as under a manager. A manager
started meanwhile leaves the job to its inline manager (the hold says it is looked after)
and takes it over only if that one is gone.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import subprocess
import sys

from .context import ManagerConfig
from .engines import make_executor
from .importpath import import_path, python_command
from .manager import Manager, engine_settings
from .spool import SpoolDir

log = logging.getLogger(__name__)


def start_inline_manager(spool: SpoolDir, job_id: str, hold_fd: int, task_modules: tuple[str, ...] = (),
                     allow_commands: bool = True) -> subprocess.Popen[bytes]:
    """Start the inline manager of one job, detached from the caller's terminal signals; it
    inherits the hold the caller took (``hold_fd``), so the job is never unlooked-after."""
    args = [str(spool.root), job_id, f"--hold-fd={hold_fd}", *(f"--tasks={m}" for m in task_modules)]
    args += ["--allow-commands"] if allow_commands else []
    # The task's module must import there as it does here: its folder, and ours, on the path
    # (after pool's own: pool/importpath.py).
    folders = [folder for m in task_modules if (folder := module_folder(m))]
    argv = python_command("pool.inline", import_path(sys.path, folders), *args)
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True, pass_fds=(hold_fd,))


def module_folder(module: str) -> str | None:
    """The folder a top-level module or package is imported from here, or None."""
    try:
        spec = importlib.util.find_spec(module.split(".", maxsplit=1)[0])
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return None
    origin = os.path.dirname(spec.origin)
    return os.path.dirname(origin) if spec.submodule_search_locations else origin


def main(argv: list[str]) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="pool inline: %(message)s")
    root, job_id, *options = argv
    modules = tuple(o.split("=", 1)[1] for o in options if o.startswith("--tasks="))
    holds = [int(o.split("=", 1)[1]) for o in options if o.startswith("--hold-fd=")]
    spool = SpoolDir(root)
    os.environ.setdefault("POOL_SPOOL", root)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller decides: it files a kill request
    hold = holds[0] if holds else spool.locks.supervise(job_id)
    if hold is None:
        return 0  # another inline manager looks after it
    # Inline, the job runs as its submitter's own child would: loader variables and all.
    config = ManagerConfig(spool=root, workers=1, task_modules=modules, allow_commands="--allow-commands" in options,
                           allow_loader_env=True)
    try:
        executor = make_executor(config.engine, engine_settings(config, threads=False, name="inline worker",
                                                                close_fds=(hold,)))
        Manager(config, executor, only=job_id).serve_one()
    finally:
        os.close(hold)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
