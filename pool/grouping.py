"""The manager's step for groups: read groups/ when it changes (or on the rescan tick)
and give dispatch each group's limit; a bad file goes to rejected/ with its reason, and
its group has no limit of its own until a good one comes."""

from __future__ import annotations

import logging

from .context import Context
from .dispatch import Dispatch
from .errors import InvalidJobSpec
from .safeio import UnsafeFile

log = logging.getLogger(__name__)


class Groups:
    def __init__(self, ctx: Context, dispatch: Dispatch) -> None:
        self.ctx = ctx
        self.dispatch = dispatch
        self.book = ctx.spool.groups
        self.stamps: dict[str, tuple[int, int, int]] = {}

    def look(self) -> None:
        names = self.book.names()
        for name in set(self.stamps) - set(names):
            del self.stamps[name]
            if self.dispatch.limits.pop(name, None) is not None:
                log.info("group %s: no limit of its own any more (its file is gone)", name)
        for name in names:
            stamp = self.book.stamp(name)
            if stamp is None or self.stamps.get(name) == stamp:
                continue
            try:
                settings = self.book.read(name)
            except FileNotFoundError:
                continue
            except (InvalidJobSpec, UnsafeFile) as exc:
                reason = str(exc) if isinstance(exc, InvalidJobSpec) else f"groups/{name}.json {exc}"
                log.warning("rejected groups/%s.json: %s", name, reason)
                self.stamps.pop(name, None)
                self.dispatch.limits.pop(name, None)
                self.ctx.spool.drop.reject_from(self.book.folder, f"{name}.json", f"group.{name}.json", reason)
                continue
            self.stamps[name] = stamp
            if settings.parallel is None:
                self.dispatch.limits.pop(name, None)
            else:
                self.dispatch.limits[name] = settings.parallel
            log.info("group %s: %s", name, f"at most {settings.parallel} at a time" if settings.parallel
                     else "no limit of its own")
