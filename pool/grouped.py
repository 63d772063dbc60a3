"""Groups seen from a client: set a group's limit (a file in groups/, which the manager
reads when it changes), and list the groups with their jobs. The format is
pool/groups.py's; keeping the limit is dispatch's."""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import InvalidJobSpec, SpoolError
from .groups import GroupSettings, check_group_name, parse_group
from .model import JobStatus, State
from .safeio import UnsafeFile
from .submitting import Submitting


@dataclass(frozen=True)
class GroupInfo:
    """One group as `pool group list` shows it: its limit (None: the workers only), and
    how many of its jobs are in each state that is not final."""

    name: str
    parallel: int | None
    running: int = 0
    queued: int = 0
    waiting: int = 0
    problem: str | None = None  # a file the manager will reject: why


class Grouping(Submitting):
    def set_group(self, name: str, parallel: int | None) -> GroupSettings:
        """At most ``parallel`` jobs of group ``name`` at a time from now on (None: as
        many as the workers run); kept in the spool, so a restart keeps it. Raises
        InvalidGroup."""
        settings = parse_group({"parallel": parallel}, name)
        if not self.dir.exists():
            raise SpoolError(f"no spool at {self.dir.root} (start `pool serve`, or pass --spool)")
        self.dir.groups.make(like=str(self.dir.status_dir))
        self.dir.groups.write(name, settings)
        return settings

    def remove_group(self, name: str) -> bool:
        """Its limit goes (its jobs stay, bounded by the workers only); False when it had
        none. Raises InvalidGroup for a name that cannot be a group's."""
        check_group_name(name, f"group {name!r}")
        return self.dir.groups.remove(name)

    def full_groups(self, statuses: Iterable[JobStatus]) -> dict[str, str]:
        """Groups of these jobs at their limit, each with what its queued jobs wait for:
        ``group gpu 1/1`` (jobs running / the limit)."""
        running = collections.Counter(s.spec.group for s in statuses if s.state is State.RUNNING and s.spec.group)
        full = {}
        for name in running:
            try:
                limit = self.dir.groups.read(name).parallel
            except (FileNotFoundError, InvalidJobSpec, UnsafeFile):
                continue
            if limit is not None and running[name] >= limit:
                full[name] = f"group {name} {running[name]}/{limit}"
        return full

    def groups(self) -> list[GroupInfo]:
        """Every group with a limit or with jobs not ended, by name."""
        counts: dict[str, collections.Counter[State]] = collections.defaultdict(collections.Counter)
        for status in self.statuses():
            if status.spec.group is not None and not status.state.is_final:
                counts[status.spec.group][status.state] += 1
        infos = {}
        for name in self.dir.groups.names():
            try:
                infos[name] = GroupInfo(name, self.dir.groups.read(name).parallel)
            except FileNotFoundError:
                continue
            except (InvalidJobSpec, UnsafeFile) as exc:
                infos[name] = GroupInfo(name, None, problem=str(exc))
        for name in counts.keys() - infos.keys():
            infos[name] = GroupInfo(name, None)
        return [GroupInfo(info.name, info.parallel, counts[name][State.RUNNING], counts[name][State.QUEUED],
                          counts[name][State.WAITING], info.problem) for name, info in sorted(infos.items())]
