"""The task registry: only callables decorated with ``@pool.task`` can be run as jobs,
and only those of the modules the manager was told to serve (``--tasks``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar, overload

from .errors import PoolError

F = TypeVar("F", bound=Callable[..., Any])

_REGISTRY: dict[str, Callable[..., Any]] = {}


def task_name(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


@overload
def task(fn: F) -> F: ...
@overload
def task(fn: None = None) -> Callable[[F], F]: ...


def task(fn: F | None = None) -> F | Callable[[F], F]:
    """Register ``fn`` as a task named ``module:function``. The function is returned
    unchanged, so it still runs on its own, outside pool."""
    if fn is None:
        return task
    _REGISTRY[task_name(fn)] = fn
    return fn


class TaskModuleError(PoolError, ImportError):
    """A ``--tasks`` module could not be imported."""


def load_task_modules(modules: tuple[str, ...] | list[str]) -> dict[str, Callable[..., Any]]:
    """Import the served modules and return their registered tasks by name."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise TaskModuleError(f"cannot import tasks module {module!r}: {type(exc).__name__}: {exc}") from None
    served = set(modules)
    return {name: fn for name, fn in _REGISTRY.items() if name.split(":", 1)[0] in served}


def unserved_reason(name: str, tasks: dict[str, Callable[..., Any]], modules: tuple[str, ...],
                    any_task: bool = False) -> str | None:
    """Why task ``name`` cannot run here, or None when it can (with ``any_task``: any
    function found by its name, imported where it runs; whether it is, that run says)."""
    if name in tasks or any_task:
        return None
    module = name.split(":", 1)[0]
    if module not in modules:
        served = ", ".join(modules) or "none"
        return (f"task {name!r} is not in a served module (served: {served}); "
                f"start the manager with --tasks {module}")
    return f"task {name!r} is not a @pool.task of module {module!r}"


def importable(name: str) -> Callable[..., Any]:
    """The function ``module:qualname`` names, imported (a private manager's worker runs
    any: pool/private.py). Raises TaskModuleError saying why it cannot be had."""
    module_name, _, qualname = name.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise TaskModuleError(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from None
    for part in qualname.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise TaskModuleError(f"module {module_name!r} has no {qualname!r}")
    if not callable(found):
        raise TaskModuleError(f"{name!r} is not callable")
    return found  # type: ignore[no-any-return]
