"""An attempt run as the user who submitted it, when the manager runs as root: as at,
cron and Slurm do, a member's job runs with her uid, her groups and her HOME, never as
root (unless the manager was told to, in so many words: `pool serve --members-as-root`).

    worker (root, holds the job's lock, fds 1 and 2 on its log)
      --spawns--> python -m pool.runas FD   (stdin: the attempt and the worker's config)
                  imports the served task modules as root, then becomes the submitter
                  (setgroups, setgid, setuid: for good), then runs the attempt's code
                  (pool/detached.py): its output goes to the log it inherited, the rest
                  is said through FD: Progressed..., then Ran | Broke
      <--relays progress into the status, takes the verdict--

The child stays in the worker's process group, so a kill of the job reaches it and all it
started. A command's working directory is entered as the submitter, so she can never name
one she could not enter herself.
"""

from __future__ import annotations

import os
import pwd
import select
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import Any

import orjson

from . import messages as msg
from .attempt import Attempts, WorkerConfig
from .importpath import python_command
from .lifecycle import Failed, Verdict, error_info
from .limits import Limits, cpu_words, ended_by_cpu_limit
from .model import JobStatus
from .procs import describe_exit
from .reporter import Reporter


def run_as(uid: int, status: JobStatus, reporter: Reporter, config: WorkerConfig) -> Verdict:
    """Run the attempt of ``status`` (queued: the child starts it) in a child that becomes
    ``uid``; relay its progress to ``reporter``; return what its code made of it."""
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return Failed(error_info("NoSuchUser", f"its submitter, uid {uid}, has no account here: not run as anyone"))
    messages_r, messages_w = os.pipe()
    order = {"attempt": msg.RunAttempt(status).encode().decode(), "config": config.to_dict(), "uid": uid}
    try:
        child = subprocess.Popen(python_command("pool.runas", config.sys_path, str(messages_w)),
                                 stdin=subprocess.PIPE, pass_fds=(messages_w,))
    finally:
        os.close(messages_w)
    conn = Connection(messages_r)
    try:
        assert child.stdin is not None
        child.stdin.write(orjson.dumps(order))
        child.stdin.close()
        verdict = relay(conn, reporter)
    finally:
        conn.close()
        code = child.wait()
    if verdict is None:  # killed by the kernel for passing a limit, or dead another way
        return Failed(ended_by(code, config.limits_of(status), f"its process, run as uid {uid},"))
    return verdict


def ended_by(code: int, limits: Limits, who: str, cpu: float | None = None) -> dict[str, Any]:
    """The error of an attempt whose process ended without a verdict (``code``: its exit
    code, minus a signal): its CPU limit's, when the kernel's signal says so, else how
    ``who`` died. (One over its memory limit fails on its own: pool/attempt.py.)"""
    if ended_by_cpu_limit(code, limits.cpu_seconds, cpu):
        return error_info("CPULimit", cpu_words(limits.cpu_seconds or 0))
    return error_info("WorkerDied", f"{who} {describe_exit(code)}")


def relay(conn: Connection, reporter: Reporter, who: str = "its process, run as its submitter") -> Verdict | None:
    """The child's reports, into the status, until its verdict (None: it ended without
    one). A write of progress waits for its time, as the child's own throttle does.
    ``who`` names the child in the error of a child that broke."""
    while True:
        due = reporter.due_in()
        if not select.select([conn], [], [], due)[0]:
            reporter.write_if_due()
            continue
        try:
            reply = msg.decode_reply(conn.recv_bytes())
        except (EOFError, OSError, ValueError):
            return None
        if isinstance(reply, msg.Progressed):
            reporter.observe(reply.fraction, reply.message)
            reporter.write_if_due()
        elif isinstance(reply, msg.Ran):
            fraction, message = reply.progress or (None, None)
            if fraction is not None or message is not None:
                reporter.observe(fraction, message)
            return reply.verdict
        elif isinstance(reply, msg.Broke):
            raise RuntimeError(f"{who} failed: {reply.why}")


def become(uid: int) -> None:
    """Become user ``uid`` for good: her groups, her group, her uid; her HOME, USER,
    LOGNAME and SHELL; her home as the working directory (else /). Raises if root could
    be taken back."""
    entry = pwd.getpwuid(uid)
    os.setgroups(os.getgrouplist(entry.pw_name, entry.pw_gid))
    os.setgid(entry.pw_gid)
    os.setuid(uid)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise RuntimeError("root could be taken back after becoming the submitter")
    os.environ.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name, SHELL=entry.pw_shell or "/bin/sh")
    try:
        os.chdir(entry.pw_dir)
    except OSError:
        os.chdir("/")


def main(fd: int) -> None:
    from .detached import run_detached
    from .reporter import Flusher

    order = orjson.loads(sys.stdin.buffer.read())
    null_in = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_in, 0)
    os.close(null_in)
    config = WorkerConfig.from_dict(order["config"])
    sys.stdout.reconfigure(line_buffering=True, errors="backslashreplace")  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True, errors="backslashreplace")  # type: ignore[union-attr]
    attempts = Attempts(config)  # the served modules, imported as the worker imported them
    become(int(order["uid"]))
    conn = Connection(fd)
    run_detached(msg.RunAttempt.decode(order["attempt"].encode()), conn.send_bytes, attempts, Flusher())


if __name__ == "__main__":
    main(int(sys.argv[1]))
