"""``pool worker``: run the hub's jobs on this machine (the celery extra: Celery, redis-py).
Imported only when it runs."""

from __future__ import annotations

import os
import socket

import click

from pool.errors import PoolError

from .commands import StrictCommand

EXTRA_MISSING = "pool worker needs the celery extra: pip install 'spoolpool[celery]'"


@click.command(cls=StrictCommand)
@click.option("--broker", required=True, metavar="URL", help="The hub's Redis (redis://HOST:PORT/DB).")
@click.option("--tasks", "task_modules", multiple=True, metavar="MODULE",
              help="A module whose @pool.task functions this machine runs (repeatable).")
@click.option("--allow-commands", is_flag=True, help="Run command jobs too (any program, as this user).")
@click.option("--slots", type=click.IntRange(1, 1024), default=os.cpu_count() or 1, show_default="CPU count",
              help="Jobs at once.")
@click.option("--name", default=socket.gethostname(), show_default="the host name",
              help="How the hub names this machine (a job's `host`).")
@click.option("--workdir", type=click.Path(file_okay=False), default="pool-worker", show_default=True,
              help="Where each attempt runs, in a folder of its own.")
@click.option("--lease", type=click.FloatRange(1, 3600), default=15.0, show_default=True,
              help="Seconds after which the hub calls a job of this machine lost when it hears nothing.")
def worker(broker: str, task_modules: tuple[str, ...], allow_commands: bool, slots: int, name: str,
           workdir: str, lease: float) -> None:
    """Run jobs of a hub (`pool serve --engine celery`) on this machine until stopped."""
    if not task_modules and not allow_commands:
        raise click.UsageError("give --tasks MODULE (repeatable) or --allow-commands: else it would run nothing")
    try:
        from pool.scaleout.protocol import MODULE
        from pool.scaleout.worker import WorkerOptions, serve
    except ImportError:
        raise PoolError(EXTRA_MISSING) from None
    for module in task_modules:
        if not MODULE.match(module):
            raise click.BadParameter(f"{module!r} is not a module name", param_hint="--tasks")
    serve(WorkerOptions(broker, name, slots, task_modules, allow_commands, os.path.abspath(workdir), lease))
