"""``pool run``: submit and follow in one step, for people who call subprocess.run today.

With a manager serving the spool, the job goes through it (in parallel with others,
visible in `pool status`); with none, it runs inline under an inline manager of its own
(pool.inline), still tracked. Exit 0 done, 1 failed or cancelled, 130 on Ctrl-C, which
also kills the job."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import click
import orjson

from pool.client import Job, Spool
from pool.errors import JobNotFound
from pool.model import TASK_PATTERN, State, new_job_id

from .commands import JobCommand
from .common import follow_log, read_log
from .jobargs import ARGV_AFTER_OPTIONS, build_job, job_options
from .views import follow


@click.command(cls=JobCommand, context_settings=ARGV_AFTER_OPTIONS)
@click.argument("args", nargs=-1, required=True, type=click.UNPROCESSED)
@job_options
@click.option("--no-inline", is_flag=True, help="With no manager serving, wait for one instead of running inline.")
@click.option("--verbose", "-v", is_flag=True, help="Also stream the job's output as it is printed.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar; the exit code says how it ended.")
@click.pass_obj
def run(spool: Spool, /, args: tuple[str, ...], is_command: bool, no_inline: bool, verbose: bool, quiet: bool,
        **options: Any) -> None:
    """Run TASK [ARGS]... or -- ARGV... to its end, with a live progress bar. It starts
    at once (with no manager serving, inline: that is what run is for); to start a job
    later, `pool submit --at TIME` or `--in DURATION`."""
    command = is_command or TASK_PATTERN.match(args[0]) is None  # `pool run -- ls -l` is a command
    # The id is known before the job exists, so a Ctrl-C at any moment finds what to cancel.
    job = Job(spool, options.pop("job_id") or new_job_id())
    load_what_following_needs()
    try:
        build_job(spool, args, command, fallback=None if no_inline else "inline", job_id=job.id, **options)
        if no_inline and not spool.dir.manager_running() and not quiet:
            click.echo(f"{job.id}: waiting for a manager to serve {spool.path}", err=True)
        code = stream(spool, job, quiet) if verbose else \
            follow(spool, [job.id], None, quiet, to_stderr=True, interruptible=False)
    except KeyboardInterrupt:
        with contextlib.suppress(JobNotFound):  # interrupted before it was submitted: nothing to stop
            job.cancel()
            if not quiet:
                click.echo(f"\n{job.id}: interrupted; cancelling", err=True)
            job.wait(timeout=60)
        sys.exit(130)
    status = job.status()
    if status.state is State.DONE and status.spec.task is not None:
        # The result on stdout, as a function call's value: `x=$(pool run mytasks:f 2)`.
        sys.stdout.buffer.write(orjson.dumps(status.result) + b"\n")
    elif status.state is State.FAILED and not quiet and not verbose:
        say_why_it_failed(spool, job.id)
    sys.exit(code)


FAILURE_TAIL = 10  # lines of a failed job's output `pool run` shows, as its stderr would have been


def say_why_it_failed(spool: Spool, job_id: str) -> None:
    """The last lines the job printed (the reason a program gives is there, as in the
    stderr of a subprocess.CalledProcessError), and where the rest is."""
    lines = read_log(spool, job_id).decode(errors="replace").splitlines()[-FAILURE_TAIL:]
    if lines:
        click.echo(f"{job_id}: its last output:", err=True)
        for line in lines:
            click.echo(f"  {line}", err=True)
    click.echo(f"{job_id}: all of its output: pool logs {job_id}", err=True)


def load_what_following_needs() -> None:
    """Import the modules the live view is drawn with (imported lazily elsewhere, for a
    quick `pool status`) before the job exists: a Ctrl-C must never land in the middle of
    an import, which it leaves broken half-way (seen under load: a RuntimeError from
    dataclasses instead of a cancel, or an exit by SIGINT instead of 130)."""
    import rich.console
    import rich.live
    import rich.text

    from . import render

    del rich, render  # loaded is all that was wanted


def stream(spool: Spool, job: Job, quiet: bool) -> int:
    """Print the job's output as it comes (as subprocess.run would show it), then how it ended."""
    follow_log(spool, job.id)
    status = job.status()
    if not quiet:
        click.echo(f"{job.id}: {status.state.value}", err=True)
    return 0 if status.state is State.DONE else 1
