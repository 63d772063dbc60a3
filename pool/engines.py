"""Where attempts run: the engine, chosen by name (`pool serve --engine NAME`).

    local             worker processes on this machine (pool/local.py): the default
    celery            `pool worker` machines, Celery over Redis (pool/scaleout: the celery extra)
    MODULE:CALLABLE   anything else: CALLABLE(settings) returns an ``Executor``
                      (pool/executor.py), imported only when named

Engines that need packages of their own live in subpackages of their own, imported only
when they are named here, so the core install stays as small as it is.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from .attempt import WorkerConfig
from .errors import InvalidArgument
from .executor import Executor
from .requests import MAX_WORKERS


@dataclass(frozen=True)
class EngineSettings:
    """What every engine is told."""

    worker: WorkerConfig  # what runs each attempt is told, and may do
    workers: int  # attempts at once
    threads: bool = True  # the manager's process runs threads: no worker may be forked from it
    close_fds: tuple[int, ...] = ()  # descriptors no process that runs attempts may keep
    broker: str | None = None  # the celery engine's Redis URL (pool serve --broker)


def default_workers(engine: str) -> int:
    """Attempts at once when `pool serve --workers` is not given: the cores of this machine,
    but for a hub, whose machines' slots decide (capped only by the number's limit)."""
    return MAX_WORKERS if engine == "celery" else os.cpu_count() or 1


def make_executor(engine: str, settings: EngineSettings) -> Executor:
    """The executor ``engine`` names. Raises InvalidArgument."""
    if engine == "local":
        from .local import LocalExecutor

        method = "forkserver" if settings.threads else "fork"
        return LocalExecutor(settings.worker, settings.workers, start_method=method,
                             preload=settings.worker.task_modules, close_fds=settings.close_fds)
    if engine == "celery":
        try:
            from .scaleout.hub import CeleryExecutor
        except ImportError as exc:
            raise InvalidArgument(f"the celery engine needs the celery extra: pip install 'spoolpool[celery]' "
                                  f"({exc})") from None
        if not settings.broker:
            raise InvalidArgument("the celery engine needs --broker URL (redis://HOST:PORT/DB)")
        celery: Executor = CeleryExecutor(settings)
        return celery
    module, sep, name = engine.partition(":")
    if not sep or not module or not name:
        raise InvalidArgument(f"unknown engine {engine!r}: 'local', or MODULE:CALLABLE")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise InvalidArgument(f"engine {engine!r} cannot be loaded: {type(exc).__name__}: {exc}") from None
    executor: Executor = factory(settings)
    return executor
