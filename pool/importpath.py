"""Where a process of pool imports from: pool itself always from where it is installed,
never from the working directory.

The working directory is on the import path of the manager and of everything that runs
jobs, so that ``--tasks mytasks`` finds ``mytasks.py`` there, as with Celery and RQ; but
after everything else: a ``pool.py`` (or a ``pool/`` folder, a clone of this repository
named so) in it would otherwise be imported in pool's place, and each worker would fail
to start (found by a new user: the manager respawned workers in a tight loop while every
job stayed queued, and ``pool run`` hung).

A process pool starts itself is started with exactly the import path it is given
(``python_command``), never with its working directory put first by ``python -m``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence

# Run by `python -c`: the import path is set before anything imports pool, then the module
# runs as `python -m` would run it, its arguments after it.
_BOOT = ("import sys, json; sys.path[:] = json.loads(sys.argv.pop(1)); import runpy; "
         "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)")


# The folder that holds this package (site-packages; a clone's root, when pool is installed
# from it in editable mode, where it is not on the import path but found by a hook that
# comes after it): put ahead of the working directory, it is where `pool` is found.
HOME = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_path(path: Sequence[str], last: Sequence[str] = ()) -> list[str]:
    """``path`` without the working directory (as '' or by name), then the folder pool is
    installed in, then ``last`` (the folders task modules are found in) and the working
    directory, in that order."""
    cwd = os.getcwd()
    ahead = [entry for entry in path if entry not in ("", cwd, *last)]
    return list(dict.fromkeys(p for p in (*ahead, HOME, *last, cwd) if p))


@contextlib.contextmanager
def started_from_home() -> Iterator[None]:
    """Run the block (a process start) with pool's own folder as the working directory:
    multiprocessing's forkserver is started with ``python -c``, whose import path begins
    with the working directory, and imports pool at once (it then takes no other path)."""
    here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # even if its name is gone
    try:
        os.chdir(HOME)
        try:
            yield
        finally:
            os.fchdir(here)
    finally:
        os.close(here)


def pool_command(*args: str) -> list[str]:
    """The argv of the ``pool`` command, run by this Python, whatever folder it runs in
    (``python -m pool`` would import a ``pool/`` found there first)."""
    return [sys.executable, "-c", "import sys; del sys.path[0]; from pool.cli.main import main; "
            "sys.argv[0] = 'pool'; main()", *args]


def python_command(module: str, path: Sequence[str], *args: str) -> list[str]:
    """The argv that runs ``module`` (as ``python -m module args`` would) with exactly
    ``path`` as its import path."""
    return [sys.executable, "-c", _BOOT, json.dumps(list(path)), module, *args]
