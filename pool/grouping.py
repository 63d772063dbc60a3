"""The manager's step for groups: read groups/ when it changes (or on the rescan tick)
and give dispatch each group's limit and whether it is paused; a bad file goes to
rejected/ with its reason, and its group has no settings of its own until a good one
comes."""

from __future__ import annotations

import logging

from .context import Context
from .dispatch import Dispatch
from .errors import InvalidJobSpec
from .groups import GroupSettings
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
            self._apply(GroupSettings(name))
            log.info("group %s: no settings of its own any more (its file is gone)", name)
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
                self._apply(GroupSettings(name))
                self.ctx.spool.drop.reject_from(self.book.folder, f"{name}.json", f"group.{name}.json", reason)
                continue
            self.stamps[name] = stamp
            self._apply(settings)
            log.info("group %s: %s%s", name, f"at most {settings.parallel} at a time" if settings.parallel
                     else "no limit of its own", ", paused: starts nothing" if settings.paused else "")

    def _apply(self, settings: GroupSettings) -> None:
        """Dispatch keeps the group's limit and whether it is paused from now on."""
        if settings.parallel is None:
            self.dispatch.limits.pop(settings.name, None)
        else:
            self.dispatch.limits[settings.name] = settings.parallel
        if settings.paused:
            self.dispatch.pause_group(settings.name)
        else:
            self.dispatch.paused_groups.discard(settings.name)
