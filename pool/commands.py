"""Running a command job: the same argv a user would give ``subprocess.run``, unchanged.

The command runs in the worker's process group (so a kill of the job reaches it and its
children), with stdin closed and stdout and stderr on one pipe, so they stay in order.
The worker copies that pipe to the job's log as output arrives and reads progress from it.
"""

from __future__ import annotations

import fcntl
import os
import select
import stat
import subprocess
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .joblog import LogCap
from .lifecycle import Failed, Succeeded, Verdict, error_info
from .limits import Limits, cpu_words, ended_by_cpu_limit, size_words
from .limits import apply as apply_limits
from .model import JobSpec, JobStatus, KeptEnv
from .parsers import OutputParser
from .procs import describe_exit, end_rest_of_group, open_pidfd
from .rules import is_loader_variable
from .usage import Meter

if TYPE_CHECKING:
    from .reporter import Reporter

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux; Python 3.10+ names it

def run_command(status: JobStatus, reporter: Reporter, allowed: bool, allow_loader_env: bool = False,
                cap: LogCap | None = None, meter: Meter | None = None, limits: Limits | None = None) -> Verdict:
    spec = status.spec
    assert spec.command is not None
    if not allowed:
        return failure("CommandsDisabled", "command jobs are disabled; start the manager with --allow-commands")
    if isinstance(spec.caller_env, KeptEnv):  # handed over without the values kept apart
        return failure("CommandNotStarted", f"cannot start {spec.command[0]!r}: the environment it was submitted "
                       "with is gone (status/<id>.env)")
    if spec.cwd is not None and (problem := cwd_problem(spec.cwd)):
        return failure("CommandNotStarted", f"cannot start {spec.command[0]!r}: cwd {spec.cwd!r} {problem}")
    env = environment(spec, allow_loader_env)
    read_end, write_end = os.pipe()
    try:
        # A bigger pipe means fewer, larger reads for a command that prints a lot.
        fcntl.fcntl(write_end, F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass
    try:
        # Its limits are put on its own process between fork and exec: setrlimit and
        # setpriority, system calls that take no lock the worker's other thread may hold.
        proc = subprocess.Popen(list(spec.command), cwd=spec.cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=write_end, stderr=write_end,
                                preexec_fn=(lambda: apply_limits(limits)) if limits else None)  # noqa: PLW1509
    except OSError as exc:
        return failure("CommandNotStarted", f"cannot start {spec.command[0]!r}: {exc.strerror or exc}")
    finally:
        os.close(write_end)
    try:
        pump_output(proc, read_end, OutputParser(spec.progress), reporter, cap, meter)
    finally:
        os.close(read_end)
    code = proc.wait()
    if code == 0:
        return Succeeded(None, exit_code=0)
    if limits and ended_by_cpu_limit(code, limits.cpu_seconds):
        return failure("CPULimit", cpu_words(limits.cpu_seconds or 0), exit_code=code)
    why = f"command {describe_exit(code)}"
    if limits and limits.memory is not None:  # an allocation refused shows only as the program fails
        why += f" (with a memory limit of {size_words(limits.memory)}: limits.memory)"
    return failure("CommandFailed", why, exit_code=code)


def cwd_problem(path: str) -> str | None:
    """Why a command cannot run in ``path``, asked as the user it runs as, or None."""
    try:
        is_dir = stat.S_ISDIR(os.stat(path).st_mode)
    except PermissionError:
        return "cannot be entered by the user the job runs as"
    except OSError:
        is_dir = False
    if not is_dir:
        return "is not a directory"
    if not os.access(path, os.X_OK):
        return "cannot be entered by the user the job runs as"
    return None


def environment(spec: JobSpec, allow_loader_env: bool) -> dict[str, str]:
    """What the command sees: the submitter's environment when it was captured (else the
    manager's), the job's ``env`` on top. A loader variable (LD_PRELOAD, ...) the submitter
    merely had set is passed only where the manager allows them; one the job asks for in
    ``env`` was refused at intake without that. What is left out is said in the log."""
    if not isinstance(spec.caller_env, Mapping):
        base = dict(os.environ)
    else:
        left_out = sorted(k for k in spec.caller_env if is_loader_variable(k) and not allow_loader_env)
        base = {k: v for k, v in spec.caller_env.items() if k not in left_out}
        if left_out:
            write_log(f"pool: not passed from the submitter's environment: {', '.join(left_out)} "
                      "(loader variables need `pool serve --allow-loader-env`)\n".encode())
        base.update({name: os.environ[name] for name in ("POOL_JOB_ID", "POOL_SPOOL", "POOL_CHECKPOINT")})
    # Python children would buffer a pipe and hold their progress back until exit.
    return {**base, "PYTHONUNBUFFERED": "1", **spec.env}


def failure(kind: str, message: str, exit_code: int | None = None) -> Failed:
    return Failed(error_info(kind, message), exit_code)


def pump_output(proc: subprocess.Popen[bytes], read_end: int, parser: OutputParser, reporter: Reporter,
                cap: LogCap | None = None, meter: Meter | None = None) -> None:
    """Copy the command's output to the log (fd 1) as it comes, reading progress from it.
    Blocks on the pipe and on the process itself (a pidfd), with the next progress write
    as the only timeout. When the command exits, whatever it left running in the job's
    process group is killed, so its output pipe closes and nothing outlives the job."""
    pidfd = open_pidfd(proc.pid)
    watched = [read_end] + ([pidfd] if pidfd is not None else [])
    exited = False
    log_ok = True
    try:
        while True:
            timeout = reporter.due_in()
            if pidfd is None and not exited:
                timeout = 0.1 if timeout is None else min(timeout, 0.1)  # no pidfd: poll the exit
            readable, _, _ = select.select(watched, [], [], timeout)
            if read_end in readable:
                chunk = os.read(read_end, 1 << 20)
                if not chunk:
                    return
                if cap is None:
                    log_ok = log_ok and write_log(chunk)
                else:
                    with cap.cutting:  # never while the flusher's check cuts the log: the cut would lose it
                        log_ok = log_ok and write_log(chunk)
                        cap.wrote(len(chunk))
                if parser.feed(chunk):
                    reporter.observe(parser.fraction, parser.message)
            if not exited and (pidfd in readable if pidfd is not None else proc.poll() is not None):
                exited = True
                if pidfd is not None:
                    watched.remove(pidfd)
                reap(proc, meter)  # reaped first: ending the rest reaps every child left
                end_rest_of_group()
            reporter.write_if_due()
    finally:
        if pidfd is not None:
            os.close(pidfd)


def reap(proc: subprocess.Popen[bytes], meter: Meter | None) -> None:
    """Wait for the command with wait4(2), so its own peak memory is known (a worker's
    RUSAGE_CHILDREN keeps only the largest of every child it ever had)."""
    try:
        _, wait_status, used = os.wait4(proc.pid, 0)
    except ChildProcessError:  # reaped already
        proc.wait()
        return
    proc.returncode = os.waitstatus_to_exitcode(wait_status)
    if meter is not None:
        meter.reaped(used)


def write_log(data: bytes) -> bool:
    """Append to the job's log (fd 1); False once it cannot be written (a full disk):
    the output is then dropped, never the job, and the command is never left blocked."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(1, view):]
    except OSError:
        return False
    return True
