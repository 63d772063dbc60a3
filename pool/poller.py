"""What the manager's loop blocks in: ``multiprocessing.connection.wait`` without building
a new selector each call (the set it waits on changes only when a worker is replaced or
an attempt taken over), on descriptors and on objects with a ``fileno()``."""

from __future__ import annotations

import select
from typing import Any


class Poller:
    def __init__(self) -> None:
        self.poll = select.poll()
        self.by_fd: dict[int, Any] = {}

    def wait(self, objects: list[Any], timeout: float) -> list[Any]:
        wanted = {obj if isinstance(obj, int) else obj.fileno(): obj for obj in objects}
        if wanted.keys() != self.by_fd.keys():
            for fd in self.by_fd.keys() - wanted.keys():
                self.poll.unregister(fd)
            for fd in wanted.keys() - self.by_fd.keys():
                self.poll.register(fd, select.POLLIN)
        self.by_fd = wanted
        events = self.poll.poll(min(timeout, 3600.0) * 1000)
        return [self.by_fd[fd] for fd, _ in events if fd in self.by_fd]
