"""The worker functions of tests/test_futures_cpython.py: CPython's test_concurrent_futures
helpers (its executor.py, test_wait.py, test_shutdown.py, test_process_pool.py and
test_thread_pool.py; PSF licence), moved to a module of their own, since pool.Executor
runs a function its worker imports by name (nothing is pickled, so no lambda, local
function or method). What CPython's helpers kept in the caller's memory (a list, a
threading.Event, a print to the parent's stdout) is a file here: a job runs in another process
(a worker of the executor's manager) and its output goes to its log. A job that stands for "still running when the
test looks" waits for its test's gate (tests/waiting.py), as the project's tests do."""

from __future__ import annotations

import builtins
import sys

from waiting import wait_for_gate


# ---------------------------------------------------------------- executor.py
def mul(x: int, y: int) -> int:
    return x * y


def capture(*args: object, **kwargs: object) -> tuple[tuple[object, ...], dict[str, object]]:
    return args, kwargs


def exception_named(name: str) -> type[BaseException]:
    """A builtin exception class (one pool.Executor makes again in the caller)."""
    found = getattr(builtins, name)
    assert isinstance(found, type) and issubclass(found, BaseException)
    return found


def raiser(exception: str, msg: str = "std") -> None:
    """CPython's raiser(exception, msg) takes the class; a job's arguments are JSON, so
    this one takes its name."""
    raise exception_named(exception)(msg)


# ---------------------------------------------------------------- test_wait.py
def raise_at_gate(gate: str, exception: str = "Exception", msg: str = "this is an exception") -> None:
    """sleep_and_raise, its sleep the wait for the test's gate."""
    wait_for_gate(gate)
    raise exception_named(exception)(msg)


def gated(gate: str, value: object = None) -> object:
    """CPython's long sleep: a job still running until its test opens the gate."""
    wait_for_gate(gate)
    return value


# ---------------------------------------------------------------- test_shutdown.py
def print_at_gate(gate: str, msg: str, path: str) -> None:
    """CPython's sleep_and_print, its sleep the wait for a gate its script opens, so the job
    still runs when the script reaches the moment its test is about; the message goes to
    ``path`` too (a job's own output goes to its log, not to the caller's stdout)."""
    wait_for_gate(gate)
    print(msg)
    sys.stdout.flush()
    with open(path, "a") as f:
        f.write(msg)


# ---------------------------------------------------------------- test_process_pool.py
def _test_traceback() -> None:
    raise RuntimeError(123) # some comment


# ---------------------------------------------------------------- test_thread_pool.py
def record_finished(path: str, n: int) -> None:
    with open(path, "a") as f:
        f.write(f"{n}\n")


def log_n_wait(log: str, gate: str, ident: str) -> None:
    with open(log, "a") as f:
        f.write(f"{ident=} started\n")
    try:
        wait_for_gate(gate)
    finally:
        with open(log, "a") as f:
            f.write(f"{ident=} stopped\n")
