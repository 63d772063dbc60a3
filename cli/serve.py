"""``pool serve``: the manager, in the foreground, until SIGINT or SIGTERM.

Its options are read by `pool service` too (cli/service.py), which checks them and writes
them into a systemd unit; every default comes from pool/defaults.py."""

from __future__ import annotations

import logging
import shlex
import sys

import click

from pool import defaults
from pool.client import Spool
from pool.engines import default_workers
from pool.importpath import import_path
from pool.joblog import MIN_MAX_BYTES
from pool.limits import Limits
from pool.requests import MAX_WORKERS

from .commands import StrictCommand
from .common import Size


@click.command(cls=StrictCommand)
@click.option("--workers", "-w", type=click.IntRange(1, MAX_WORKERS),
              show_default="CPU count; with --engine celery, the slots of the connected `pool worker`s",
              help="Jobs that run at once.")
@click.option("--tasks", "task_modules", multiple=True, metavar="MODULE",
              help="A module whose @pool.task functions may run (repeatable).")
@click.option("--allow-commands", is_flag=True, help="Let command jobs run (they run as your user).")
@click.option("--grace", type=click.FloatRange(0), default=defaults.SHUTDOWN_GRACE, show_default=True,
              help="On SIGINT/SIGTERM, seconds running jobs get to finish before they are stopped and requeued.")
@click.option("--kill-grace", type=click.FloatRange(0), default=defaults.KILL_GRACE, show_default=True,
              help="Seconds between SIGTERM and SIGKILL when a job is killed or times out.")
@click.option("--settle", type=click.FloatRange(0), default=defaults.SETTLE, hidden=True)
@click.option("--max-file-bytes", type=click.IntRange(1), default=defaults.MAX_FILE_BYTES, show_default=True,
              help="Job files larger than this are rejected without being read.")
@click.option("--allow-loader-env", is_flag=True, help="Let command jobs set LD_PRELOAD and other loader variables.")
@click.option("--group", help="Share the spool with this group: its members may submit jobs.")
@click.option("--max-log-bytes", type=click.IntRange(MIN_MAX_BYTES),
              help="Cut a job's log to its last half once it passes this size (default: no limit).")
@click.option("--max-checkpoint-bytes", type=click.IntRange(1), default=defaults.MAX_CHECKPOINT_BYTES,
              show_default=True, help="pool.checkpoint() refuses a bigger state (a CheckpointError in the job).")
@click.option("--job-memory", type=Size(), help="The memory limit of a job that sets none (2G, 512M).")
@click.option("--job-cpu-seconds", type=click.FloatRange(1), help="The CPU limit of a job that sets none (seconds).")
@click.option("--job-nice", type=click.IntRange(0, 19), help="The niceness of a job that sets none.")
@click.option("--job-open-files", type=click.IntRange(16, 1 << 20),
              help="The open files a job that sets no limit may have.")
@click.option("--memory", type=Size(), help="The memory jobs' declared needs must fit in (default: the machine's).")
@click.option("--cpus", type=click.FloatRange(0, min_open=True),
              help="The CPUs jobs' declared needs must fit in (default: the machine's).")
@click.option("--reserve-after", type=click.FloatRange(0), default=defaults.RESERVE_AFTER, show_default=True,
              help="Seconds the most urgent job whose needs do not fit waits before smaller ones stop starting.")
@click.option("--events-max-bytes", type=click.IntRange(4096), default=defaults.EVENTS_MAX_BYTES, show_default=True,
              help="events.jsonl is rotated to events.1.jsonl past this size.")
@click.option("--members-as-root", is_flag=True,
              help="Served by root: run the jobs of a shared spool's members as root, not as themselves.")
@click.option("--engine", default="local", show_default=True, metavar="NAME",
              help="Where attempts run: local worker processes, celery (`pool worker` machines, with "
                   "--broker), or MODULE:CALLABLE giving an executor.")
@click.option("--broker", metavar="URL", help="The Redis of --engine celery (redis://HOST:PORT/DB).")
@click.option("--on-finish", metavar="CMD",
              help="Run CMD (split as a shell would, run with no shell) once for each job that ends: its "
                   "status JSON on stdin, POOL_JOB_ID, POOL_STATE, POOL_EXIT_CODE in its environment.")
@click.option("--hook-timeout", type=click.FloatRange(0, min_open=True), default=defaults.HOOK_TIMEOUT,
              show_default=True, help="Seconds an --on-finish hook may run before it is killed.")
@click.option("--durable", is_flag=True,
              help="Put every state pool acts on on disk first (fsync), so that a power cut loses no "
                   "accepted job and no recorded outcome; costs disk writes (README: What survives what).")
@click.pass_obj
def serve(spool: Spool, workers: int | None, task_modules: tuple[str, ...], allow_commands: bool, grace: float,
          kill_grace: float, settle: float, max_file_bytes: int, allow_loader_env: bool, group: str | None,
          max_log_bytes: int | None, max_checkpoint_bytes: int, events_max_bytes: int, members_as_root: bool,
          engine: str, on_finish: str | None, hook_timeout: float, job_memory: int | None,
          job_cpu_seconds: float | None, job_nice: int | None, job_open_files: int | None, memory: int | None,
          cpus: float | None, reserve_after: float, durable: bool, broker: str | None) -> None:
    """Run the manager in the foreground until SIGINT or SIGTERM."""
    from pool.manager import Manager, ManagerConfig

    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Task modules next to where the user runs `pool serve` must import, as with celery/rq,
    # but never in pool's place (pool/importpath.py).
    sys.path[:] = import_path(sys.path)
    if workers is None:
        workers = default_workers(engine)
    Manager(ManagerConfig(
        spool=str(spool.path), workers=workers, task_modules=task_modules, allow_commands=allow_commands,
        shutdown_grace=grace, kill_grace=kill_grace, settle=settle, max_file_bytes=max_file_bytes,
        allow_loader_env=allow_loader_env, group_gid=group_id(group) if group else None,
        events_max_bytes=events_max_bytes, max_log_bytes=max_log_bytes, engine=engine, members_as_root=members_as_root,
        on_finish=hook_argv(on_finish), hook_timeout=hook_timeout, max_checkpoint_bytes=max_checkpoint_bytes,
        job_limits=Limits(job_memory, job_cpu_seconds, job_nice, job_open_files), memory=memory, cpus=cpus,
        reserve_after=reserve_after, durable=durable, broker=broker,
    )).serve()


def hook_argv(command: str | None) -> tuple[str, ...]:
    if command is None:
        return ()
    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:
        raise click.BadParameter(f"{command!r}: {exc}", param_hint="--on-finish") from None
    if not argv:
        raise click.BadParameter("an empty command", param_hint="--on-finish")
    return argv


def group_id(name: str) -> int:
    import grp

    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise click.BadParameter(f"no group named {name!r}", param_hint="--group") from None
