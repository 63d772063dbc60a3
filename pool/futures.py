"""``pool.Executor``: ``concurrent.futures`` in front of a spool, so that code written for
``ProcessPoolExecutor`` gets jobs that are tracked, killable and kept.

    Executor(spool=None)          a private spool (a fresh temporary folder) and a
                                  private manager for the executor's lifetime
    Executor(spool=PATH)          the manager serving PATH, or a private one if none does
    submit(fn, *args, **kwargs)   a job (task "module:qualname", JSON arguments) put in
                                  the executor's outbox, whose thread writes what was put
                                  since its last write as one file (pool/outbox.py), and
                                  a JobFuture listening for its status (pool/awaiting.py)
    the job's status changes      running: future.running(); progress: future.progress;
                                  done: its result; failed: its exception, made again
                                  here; cancelled: future.cancelled()
    shutdown(wait=True)           its futures done, the private manager stopped, the
                                  private spool removed

A function is sent by its name, never as code: the worker imports it (a manager serving
a spool runs only its --tasks; a private one, any function its owner can import).
"""

from __future__ import annotations

import atexit
import builtins
import concurrent.futures
import contextlib
import importlib
import inspect
import os
import shutil
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import InvalidStateError
from concurrent.futures._base import CANCELLED_AND_NOTIFIED, FINISHED
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .awaiting import Heard, Watcher, watcher
from .client import Job, Spool
from .errors import (
    InvalidJobSpec,
    JobFailed,
    JobNotFound,
    JobRejected,
    ManagerLost,
    ManagerRunning,
    PoolError,
    TaskNotServed,
)
from .finding import default_spool_path
from .model import JobStatus, State, encode_json, new_job_id
from .outbox import Outbox, Outgoing
from .tasks import _REGISTRY, unserved_reason

if TYPE_CHECKING:
    from .private import PrivateManager


class RemoteTraceback(Exception):
    """The traceback of the job's exception, as its worker printed it: the ``__cause__``
    of the exception a JobFuture raises (as ProcessPoolExecutor's is)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class JobFuture(concurrent.futures.Future[Any]):
    """A ``Future`` whose work is a job of a spool: ``job_id``, ``progress`` (0 to 1, or
    None), ``status`` (the last one heard), ``kill()`` for a job that runs."""

    def __init__(self, spool: Spool, job_id: str, outbox: Outbox | None = None) -> None:
        super().__init__()
        self.spool = spool
        self.job_id = job_id
        self.status: JobStatus | None = None
        self.outbox = outbox  # its executor's, where the job waits until its file is written
        # The first job of a .jsonl of several (pool/outbox.py) tells the others when the
        # file is refused: rejected/ names the file after that job alone.
        self.batch_mates: list[JobFuture] = []

    def __repr__(self) -> str:
        return f"<JobFuture {self.job_id} {super().__repr__().split(' ', 2)[-1]}"

    @property
    def progress(self) -> float | None:
        status = self.status
        return status.progress if status is not None else None

    def cancel(self) -> bool:
        """Cancel the job if it has not started (True); a job that runs is left to run
        (False: ``kill()`` stops it)."""
        if self.done():
            return self.cancelled()
        if self.running():
            return False
        return cancel_all([self]) == [True]

    def kill(self, grace: float | None = None) -> None:
        """Stop the job, running or not (``pool kill``): the future ends cancelled."""
        if self.outbox is not None:
            if self.take_back():
                return
            self.outbox.flush()  # a write of it under way is over
        try:
            self.spool.cancel(self.job_id, grace)
        except JobRejected:
            raise
        except JobNotFound:
            if self.outbox is None:
                raise
            self.spool.kill_on_its_way(self.job_id, grace)  # in a .jsonl not taken in yet

    def logs(self) -> str:
        """What the job printed so far."""
        return Job(self.spool, self.job_id).logs()

    # ------------------------------------------------------------ told by the watcher
    def heard(self, heard: Heard) -> bool:
        """A status of the job, or why none can be had; True once the future is done."""
        if isinstance(heard, JobRejected):
            for mate in self.batch_mates:
                watcher().forget(mate.spool, mate.job_id, mate.heard)
                mate.heard(JobRejected(mate.job_id, heard.reason))
        elif isinstance(heard, JobNotFound) and self.outbox is not None and self.status is None:
            # Not in the spool yet (in the outbox, or in a .jsonl no manager took in yet,
            # where no status is looked for): a read where inotify cannot be had says so.
            return False
        if isinstance(heard, PoolError):
            return self._settle(lambda: self.set_exception(heard))
        self.status = heard
        state = heard.state
        if state is State.DONE:
            return self._settle(lambda: self.set_result(heard.result))
        if state is State.CANCELLED:
            self.end_cancelled()
            return True
        if state is State.FAILED:
            return self._settle(lambda: self.set_exception(job_exception(heard)))
        if heard.started_at is not None and not self.running():
            with contextlib.suppress(RuntimeError, InvalidStateError):
                self.set_running_or_notify_cancel()
        return False

    def take_back(self) -> bool:
        """Cancel the job if its file is not written yet (it never becomes a job of the
        spool); whether it was not."""
        if self.outbox is None or not self.outbox.take({self.job_id}):
            return False
        watcher().forget(self.spool, self.job_id, self.heard)
        self.end_cancelled()
        return True

    def unwritten(self, exc: BaseException) -> None:
        """Its job's file could not be written (in the outbox's thread)."""
        watcher().forget(self.spool, self.job_id, self.heard)
        self._settle(lambda: self.set_exception(exc))

    def _settle(self, settle: Callable[[], None]) -> bool:
        with contextlib.suppress(InvalidStateError):  # cancelled meanwhile (or told twice)
            settle()
        return True

    def end_cancelled(self) -> None:
        """The job ended cancelled, whether it had started or not: ``result()`` raises
        CancelledError, as ``cancel()`` followed by ``set_running_or_notify_cancel()``
        would leave it (Future has no public way to cancel a running one)."""
        with self._condition:
            if self._state in (FINISHED, CANCELLED_AND_NOTIFIED):
                return
            self._state = CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        self._invoke_callbacks()  # type: ignore[attr-defined]


def cancel_all(futures: Iterable[JobFuture], wait: bool = True) -> list[bool]:
    """Cancel each future's job that has not started, each spool's in one go (``wait``:
    and say which are cancelled; else their ends are heard as any change is). A job
    still in its executor's outbox is taken back, never written."""
    futures = list(futures)
    by_spool: dict[Path, list[JobFuture]] = {}
    for future in futures:
        if not future.take_back():
            by_spool.setdefault(future.spool.path, []).append(future)
    for group in by_spool.values():
        cancelled = group[0].spool.cancel_unstarted([f.job_id for f in group], wait)
        for future in group:
            if cancelled.get(future.job_id):
                future.end_cancelled()
    return [f.cancelled() for f in futures]


def job_exception(status: JobStatus) -> BaseException:
    """The exception a failed job's future raises: the one its task raised, made again
    when its class is a builtin or of the task's own module; TimeoutError for a job
    that ran out of time; else JobFailed naming it. Its traceback is the ``__cause__``."""
    error: Mapping[str, Any] = status.error or {"type": "Failed", "message": "the job failed"}
    kind, message = str(error.get("type")), str(error.get("message"))
    exc: BaseException | None = None
    if kind == "Timeout":
        exc = concurrent.futures.TimeoutError(f"job {status.id!r}: {message}")
    else:
        cls = getattr(builtins, kind, None)
        module = sys.modules.get((status.spec.task or ":").split(":", 1)[0])
        if not (isinstance(cls, type) and issubclass(cls, Exception)) and module is not None:
            cls = getattr(module, kind, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            args = error.get("args")
            try:
                exc = cls(*args) if isinstance(args, list) else cls(message)
            except Exception:
                exc = None
    if exc is None:
        exc = JobFailed(f"job {status.id!r} failed: {kind}: {message}", status)
    traceback = error.get("traceback")
    if isinstance(traceback, str) and traceback:
        exc.__cause__ = RemoteTraceback(f'\n"""\n{traceback}"""')
    return exc


# ---------------------------------------------------------------- what a function is called
def task_of(fn: Callable[..., Any]) -> tuple[str, str | None]:
    """The name a worker finds ``fn`` by (``module:qualname``), and the folder its module
    is imported from when it is the main script's. Raises TaskNotServed saying why a
    function cannot be sent by name (a lambda, a nested function, a method, a partial, a
    function typed into an interactive session)."""
    if not callable(fn):
        raise TypeError(f"{fn!r} is not callable")
    bound = getattr(fn, "__self__", None)
    if inspect.ismethod(fn) or (bound is not None and not inspect.ismodule(bound)):
        raise TaskNotServed(f"{fn!r} is a bound method: a job runs a module-level function (its worker imports "
                            "it by name: no code is sent)")
    module_name, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not isinstance(module_name, str) or not isinstance(qualname, str):
        raise TaskNotServed(f"{fn!r} has no module-level name: a job runs a module-level function (its worker "
                            "imports it by name: no code is sent)")
    if "<" in qualname:
        raise TaskNotServed(f"{module_name}.{qualname} is a lambda or is defined inside a function: a job runs a "
                            "module-level function (its worker imports it by name: no code is sent)")
    folder = None
    module = sys.modules.get(module_name)
    if module_name == "__main__":
        module_name, folder = main_module_name()
    found: Any = module if module is not None else _import(module_name)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is None or (found is not fn and getattr(found, "__wrapped__", None) is not fn):
        raise TaskNotServed(f"{module_name}:{qualname} is not what {module_name} has under that name: a job runs a "
                            "module-level function, found by its name")
    return f"{module_name}:{qualname}", folder


def main_module_name() -> tuple[str, str | None]:
    """What the main script is called where it is imported as a module (as
    multiprocessing's spawn does): its name under ``python -m``, else its file's."""
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return spec.name, None
    path = getattr(main, "__file__", None)
    name = Path(path).stem if isinstance(path, str) else ""
    if not path or not name.isidentifier():
        raise TaskNotServed("a function typed into an interactive session cannot be imported by a worker: put it "
                            "in a module (or a script run with python)")
    return name, os.path.dirname(os.path.abspath(path))


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        raise TaskNotServed(f"module {module_name!r} cannot be imported: {type(exc).__name__}: {exc}") from None


def check_arguments(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Raise TypeError naming the first argument JSON cannot carry (if one cannot)."""
    named = [(f"argument {i + 1}", value) for i, value in enumerate(args)] + \
        [(f"argument {key!r}", value) for key, value in kwargs.items()]
    for what, value in named:
        try:
            encode_json(value)
        except ValueError as exc:
            raise TypeError(f"{name}: {what} ({type(value).__name__}) {exc}") from None


# ---------------------------------------------------------------- the executor
class Executor(concurrent.futures.Executor):
    """``concurrent.futures.Executor`` whose work is jobs of a spool (see the module's
    docstring). ``max_workers`` is how many a private manager runs at once (a serving
    manager runs its own number); ``tasks``: the modules a private manager serves (None:
    any function its owner can import); ``retries``, ``timeout``, ``priority``, ``name``,
    ``group``, ``limits``, ``needs``: the job keys of every job submitted."""

    def __init__(self, max_workers: int | None = None, spool: str | os.PathLike[str] | None = None, *,
                 tasks: Iterable[str] | None = None, retries: int = 0, timeout: float | None = None,
                 priority: int = 0, name: str | None = None, group: str | None = None,
                 limits: Mapping[str, Any] | None = None, needs: Mapping[str, Any] | None = None) -> None:
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self.max_workers = max_workers or os.cpu_count() or 1
        self.tasks = tuple(tasks) if tasks is not None else None
        options = {"retries": retries, "timeout": timeout, "priority": priority, "name": name, "group": group,
                   "limits": dict(limits) if limits else None, "needs": dict(needs) if needs else None}
        self.options = {key: value for key, value in options.items() if value not in (None, 0)}
        self.private_dir = tempfile.mkdtemp(prefix="pool-executor-") if spool is None else None
        self.spool = Spool(self.private_dir or spool)
        self.lock = threading.Lock()
        self.futures: dict[str, JobFuture] = {}
        self.closed = False
        self.broken: str | None = None
        self.manager: PrivateManager | None = None
        self.watcher = watcher()
        self._forget_done = _weakly(self, Executor._forget)  # a future does not keep its executor alive
        if self.private_dir is not None or not self.spool.dir.manager_running():
            self._start_manager()
        self.outbox = Outbox(self.spool.dir.drop.folder, self.spool.job_file_mode(), _batched)
        self.serving = self.spool.dir.serving()  # what the manager runs, when one of another's serves
        _live.add(self)
        # Dropped without shutdown, it is collected (as ProcessPoolExecutor's is): what it
        # was given is written, and its manager let go, which stops once that is done.
        # (At exit, _at_exit shuts down the executors still alive, their work done first.)
        self._finalizer = weakref.finalize(self, _let_go, self.manager, self.watcher, self.outbox)
        self._finalizer.atexit = False

    def _start_manager(self) -> None:
        from .private import PrivateManager  # imported by its own process as __main__: not before

        self.spool.dir.create()
        folder = None
        with contextlib.suppress(TaskNotServed):
            folder = main_module_name()[1]
        try:
            self.manager = PrivateManager.start(self.spool.dir, self.max_workers, self.tasks,
                                                [folder] if folder else [])
        except ManagerRunning:
            return  # another manager took the spool meanwhile: the jobs go to it
        if self.manager.pidfd is not None:
            self.watcher.on_exit(self.manager.pidfd, _weakly(self, Executor._manager_ended))

    def __repr__(self) -> str:
        return f"<pool.Executor {self.spool.path} {'private manager' if self.manager else 'served'}>"

    # ------------------------------------------------------------ submit
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> JobFuture:
        task, _ = task_of(fn)
        self._check_served(task, fn)
        doc = {"task": task, "args": list(args), "kwargs": kwargs, "id": new_job_id(), **self.options}
        spec = self.spool.prepared(doc)  # its id is new (48 random bits): no other job's to check
        try:
            data = encode_json(doc)
        except ValueError as exc:  # say which argument, when one is at fault
            check_arguments(task, args, kwargs)
            raise InvalidJobSpec(f"job {spec.id!r}: {exc}") from None
        with self.lock:
            if self.closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self.broken:
                raise ManagerLost(self.broken)
            future = JobFuture(self.spool, spec.id, self.outbox)
            self.futures[future.job_id] = future
            future.add_done_callback(self._forget_done)
            # Listening before the file is written: no status of it can be missed.
            self.watcher.listen(self.spool, future.job_id, future.heard, read_now=False)
            self.outbox.put(Outgoing(future.job_id, data, future))
        return future

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1, **kwargs: Any) -> Iterator[Any]:
        """The base class's (each call a job of its own: ``chunksize`` is accepted and
        ignored), refusing a ``chunksize`` below 1 as ProcessPoolExecutor's does."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        return super().map(fn, *iterables, timeout=timeout, chunksize=chunksize, **kwargs)

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        if isinstance(future, JobFuture):
            with self.lock:
                self.futures.pop(future.job_id, None)

    def _check_served(self, task: str, fn: Callable[..., Any]) -> None:
        """Refuse at once what the manager serving the spool would refuse at intake."""
        if self.manager is not None and self.tasks is None:
            return
        serving = self.serving
        if serving is None or serving.any_task or serving.task_modules is None:
            return  # no manager to ask (the job waits for one), or one that runs anything
        reason = unserved_reason(task, {task: fn} if task in _REGISTRY else {}, serving.task_modules)
        if reason:
            raise TaskNotServed(f"the manager serving {self.spool.path} would refuse it: {reason}")

    # ------------------------------------------------------------ attach
    @classmethod
    def attach(cls, job_id: str, spool: str | os.PathLike[str] | None = None) -> JobFuture:
        """A future for a job already in ``spool`` (submitted by another process, or by
        this one before a restart). Raises JobNotFound."""
        client = Spool(spool if spool is not None else default_spool_path())
        future = JobFuture(client, job_id)
        if not future.heard(client.status(job_id)):  # one that has ended is done at once
            watcher().listen(client, job_id, future.heard)
        return future

    # ------------------------------------------------------------ shutdown
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self.lock:
            self.closed = True
            pending = [f for f in self.futures.values() if not f.done()]
        if cancel_futures:
            cancel_all((f for f in pending if not f.running()), wait=False)
        self.outbox.close()  # what was submitted is in the spool: the manager can see it
        if wait:
            concurrent.futures.wait(pending)
        _live.discard(self)
        self._finalizer.detach()
        if self.manager is None:
            return
        if not wait:
            # It stops once what was submitted is done; should it die first, the futures
            # still pending hear so (ManagerLost), never hang.
            self.manager.let_go()
            return
        if self.manager.pidfd is not None:
            self.watcher.drop_exit(self.manager.pidfd)
        self.manager.stop()
        if self.private_dir is not None:
            self.watcher.release(self.spool.path)
            shutil.rmtree(self.private_dir, ignore_errors=True)
            self.spool.dir.close()  # the descriptors of its folders, which are gone

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        if exc_type is KeyboardInterrupt:  # Ctrl-C: nothing more starts; what runs is the spool's
            self.shutdown(wait=False, cancel_futures=True)
        else:
            self.shutdown(wait=True)

    def _manager_ended(self) -> None:
        """The private manager ended while the executor needed it (in the watcher's
        thread): a job whose end was written first is done; the others' futures raise
        ManagerLost, and so does every submit from now on."""
        if self.spool.dir.manager_running():
            return  # another manager serves the spool: the jobs go on there
        code = self.manager.process.poll() if self.manager is not None else None
        with self.lock:
            self.broken = f"the manager of {self.spool.path} ended (exit code {code}) before its jobs did"
            pending = [f for f in self.futures.values() if not f.done()]
        for future in pending:
            try:
                if future.heard(self.spool.status(future.job_id)):
                    continue
            except (PoolError, OSError):
                pass
            with contextlib.suppress(InvalidStateError):
                future.set_exception(ManagerLost(f"job {future.job_id!r}: {self.broken}"))


_live: weakref.WeakSet[Executor] = weakref.WeakSet()


def _weakly(executor: Executor, method: Callable[..., None]) -> Callable[..., None]:
    """``method`` of ``executor`` as a callback that does not keep the executor alive
    (a no-op once it is collected)."""
    ref = weakref.ref(executor)

    def call(*args: Any) -> None:
        alive = ref()
        if alive is not None:
            method(alive, *args)

    return call


def _let_go(manager: PrivateManager | None, watcher: Watcher, outbox: Outbox) -> None:
    """An executor collected without shutdown: what it was given is written, and its
    private manager is let go."""
    outbox.close()
    if manager is None:
        return
    if manager.pidfd is not None:
        watcher.drop_exit(manager.pidfd)
    manager.let_go()


def _batched(part: list[Outgoing]) -> None:
    """The outbox writes these jobs as one .jsonl: should it be refused, rejected/ names
    it after the first job alone, whose future tells the others."""
    part[0].future.batch_mates = [o.future for o in part[1:]]


@atexit.register
def _at_exit() -> None:
    """As ProcessPoolExecutor does: an executor not shut down is, its work done first."""
    for executor in list(_live):
        with contextlib.suppress(Exception):
            executor.shutdown(wait=True)
