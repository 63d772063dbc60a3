"""One attempt's code, run in this process: a task (a ``@pool.task`` of a served module,
called with the job's arguments) or a command (run as its own process, its output
copied to fd 1 as it comes and its progress read from it).

What the code made of the attempt is a ``Verdict`` (succeeded with a result, or failed
with an error); how far it got goes to a reporter. Where fds 1 and 2 point, and where
the reporter writes, is the caller's business: a local worker points them at the job's
log and its status in the spool (pool/worker.py), a detached runner at whatever carries
them to its manager (pool/detached.py).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from . import defaults
from .checkpoints import CHECKPOINTS, STATE, attempt_checkpoint
from .commands import run_command
from .joblog import LogCap
from .lifecycle import Failed, Succeeded, Verdict, error_info
from .limits import NO_LIMITS, Limits, memory_words
from .model import JobStatus
from .progress import hook_tqdm
from .reporter import Reporter
from .rules import MAX_NESTING, nesting_depth
from .tasks import TaskModuleError, importable, load_task_modules, unserved_reason
from .usage import Meter

MAX_ARGS_BYTES = 4096  # an exception's arguments kept in its job's error record, at most


@dataclass(frozen=True)
class WorkerConfig:
    """What a process that runs attempts is told (and may do)."""

    spool: str
    task_modules: tuple[str, ...] = ()
    any_task: bool = False  # any importable function, not only a served @pool.task (pool/private.py)
    allow_commands: bool = False
    allow_loader_env: bool = False
    progress_interval: float = 0.2
    max_log_bytes: int | None = None  # pool serve --max-log-bytes: see pool.joblog
    max_checkpoint_bytes: int = defaults.MAX_CHECKPOINT_BYTES  # pool serve --max-checkpoint-bytes
    durable: bool = False  # pool serve --durable: outcomes, start markers and checkpoints reach the disk
    sys_path: tuple[str, ...] = ()
    name: str = "worker"  # how the timeline names who started an attempt
    as_submitter: bool = False  # run a member's attempt as her (a manager running as root: pool/runas.py)
    cwd: str = ""  # the working directory jobs run in (the manager's); "" for this process's own
    # What a job may use when it sets no limit of its own (pool serve --job-memory, ...).
    job_memory: int | None = None
    job_cpu_seconds: float | None = None
    job_nice: int | None = None
    job_open_files: int | None = None

    def limits_of(self, status: JobStatus) -> Limits:
        """The limits an attempt of the job runs under: its own, and the manager's where it sets none."""
        defaults = Limits(self.job_memory, self.job_cpu_seconds, self.job_nice, self.job_open_files)
        return (status.spec.limits or NO_LIMITS).over(defaults)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> WorkerConfig:
        """As ``to_dict`` wrote it, read back from JSON (where tuples became lists)."""
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in doc.items()}
        return cls(**values)


def exception_info(exc: BaseException) -> dict[str, Any]:
    """The ``error`` record of an exception the job's code raised, fit to print and to
    store whatever text it holds (a file name that is not UTF-8, from os.listdir)."""
    # Start the traceback at the job's own code: the runner's frame is noise to its author.
    frames = exc.__traceback__.tb_next if exc.__traceback__ else None
    error = error_info(type(exc).__name__, printable(str(exc)),
                       printable("".join(traceback.format_exception(type(exc), exc, frames))))
    # Its arguments too, when JSON carries them: a caller that has its class makes it
    # again as it was (pool.Executor: KeyError('k'), not KeyError("'k'")).
    try:
        if len(orjson.dumps(list(exc.args))) <= MAX_ARGS_BYTES and nesting_depth(list(exc.args)) <= MAX_NESTING:
            error["args"] = list(exc.args)
    except TypeError:
        pass
    return error


def printable(text: str) -> str:
    """``text`` with what cannot be encoded escaped: bytes that were not UTF-8 (kept by
    Python as lone surrogates) as ``\\xff``, any other lone surrogate as ``\\udxxx``."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


class Attempts:
    """Runs attempts' code, one after another, in this process."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.tasks: dict[str, Callable[..., Any]] = {}
        self.load_error: str | None = None
        try:
            self.tasks = load_task_modules(config.task_modules)
        except TaskModuleError as exc:
            self.load_error = str(exc)
        hook_tqdm()

    def run(self, status: JobStatus, reporter: Reporter, cap: LogCap | None = None) -> Verdict:
        """Run the job's code to its end and say what it made of it."""
        spec = status.spec
        os.environ["POOL_JOB_ID"] = spec.id
        os.environ["POOL_SPOOL"] = self.config.spool
        checkpoints = os.path.join(self.config.spool, CHECKPOINTS)
        os.environ["POOL_CHECKPOINT"] = os.path.join(checkpoints, spec.id, STATE)
        meter = Meter()
        limits = self.config.limits_of(status)
        with attempt_checkpoint(checkpoints, spec.id, self.config.max_checkpoint_bytes, self.config.durable):
            if spec.task is not None:
                verdict = self.run_task(status, limits)
            else:
                verdict = run_command(status, reporter, self.config.allow_commands, self.config.allow_loader_env, cap,
                                      meter, limits)
        return dataclasses.replace(verdict, usage=meter.read(own_code=spec.task is not None))

    def run_task(self, status: JobStatus, limits: Limits = NO_LIMITS) -> Verdict:
        spec = status.spec
        assert spec.task is not None
        reason = self.load_error or unserved_reason(spec.task, self.tasks, self.config.task_modules)
        function = self.tasks.get(spec.task)
        if function is None and self.config.any_task:
            try:
                function, reason = importable(spec.task), None
            except TaskModuleError as exc:
                reason = str(exc)
        if reason or function is None:
            return Failed(error_info("TaskNotAvailable", reason or f"task {spec.task!r} is not available"))
        try:
            value = function(*spec.args, **spec.kwargs)
            orjson.dumps(value)
            if nesting_depth(value) > MAX_NESTING:
                raise ValueError(f"the result is nested more than {MAX_NESTING} levels deep")
        except BaseException as exc:  # the job's own failure, whatever it raised
            error = exception_info(exc)
            sys.stderr.write(str(error["traceback"]))
            if isinstance(exc, MemoryError) and limits.memory is not None:  # its limit's doing: named so
                error.update(type="MemoryLimit", message=memory_words(limits.memory))
            return Failed(error)
        return Succeeded(value)
