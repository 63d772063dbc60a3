"""Groups seen from a client: set a group's limit (a file in groups/, which the manager
reads when it changes), and list the groups with their jobs. The format is
pool/groups.py's; keeping the limit is dispatch's."""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import InvalidJobSpec, SpoolError
from .finding import Brief
from .groups import GroupSettings, check_group_name, parse_group
from .model import DEFAULT_GROUP, UNDER_WAY, JobStatus, State
from .safeio import UnsafeFile
from .submitting import Submitting


@dataclass(frozen=True)
class GroupInfo:
    """One group as `pool group list` shows it: its limit (None: the workers only), and
    how many of its jobs are in each state that is not final."""

    name: str
    parallel: int | None
    paused: bool = False
    running: int = 0
    queued: int = 0
    waiting: int = 0
    problem: str | None = None  # a file the manager will reject: why


class Grouping(Submitting):
    def set_group(self, name: str, parallel: int | None) -> GroupSettings:
        """At most ``parallel`` jobs of group ``name`` at a time from now on (None: as
        many as the workers run); kept in the spool, so a restart keeps it. Raises
        InvalidGroup."""
        return self._change_group(name, parallel=parallel)

    def pause_group(self, name: str, stop_running: bool = False) -> list[JobStatus]:
        """Start no more jobs of group ``name`` (``default``: those that name none) until
        ``resume_group``; a job sent ahead to a busy worker is taken back. Its running
        jobs run on, or, with ``stop_running``, are paused too (returned, as they are
        once the manager took the requests). Kept in the spool."""
        self._change_group(name, paused=True)
        running = [s.id for s in self.statuses(State.RUNNING) if s.spec.queue_group == name] if stop_running else []
        return [self.pause(job_id) for job_id in running]

    def resume_group(self, name: str) -> list[JobStatus]:
        """Start the group's jobs again, and resume its paused ones (returned)."""
        self._change_group(name, paused=False)
        return [self.resume(s.id) for s in self.statuses(State.PAUSED) if s.spec.queue_group == name]

    def group_names(self) -> list[str]:
        """Every group with settings, or with jobs not ended, and ``default``: what
        `pool pause --all` pauses."""
        named = {s.spec.queue_group for s in self.statuses() if not s.state.is_final}
        return sorted({DEFAULT_GROUP, *self.dir.groups.names(), *named})

    def _change_group(self, name: str, **changes: object) -> GroupSettings:
        check_group_name(name, f"group {name!r}")
        if not self.dir.exists():
            raise SpoolError(f"no spool at {self.dir.root} (start `pool serve`, or pass --spool)")
        self.dir.groups.make(like=str(self.dir.status_dir))
        try:
            current = self.dir.groups.read(name)
        except (FileNotFoundError, InvalidJobSpec, UnsafeFile):
            current = GroupSettings(name)
        settings = parse_group({**current.to_dict(), **changes}, name)
        self.dir.groups.write(name, settings)
        return settings

    def remove_group(self, name: str) -> bool:
        """Its limit goes (its jobs stay, bounded by the workers only); False when it had
        none. Raises InvalidGroup for a name that cannot be a group's."""
        check_group_name(name, f"group {name!r}")
        return self.dir.groups.remove(name)

    def full_groups(self, statuses: Iterable[JobStatus | Brief]) -> dict[str, str]:
        """Groups that start none of their queued jobs now, each with what those wait for:
        ``group gpu 1/1`` (at its limit: jobs running / the limit), ``group gpu paused``."""
        running = collections.Counter(s.group if isinstance(s, Brief) else s.spec.queue_group
                                      for s in statuses if s.state in UNDER_WAY)
        full = {}
        for name in self.dir.groups.names():
            try:
                settings = self.dir.groups.read(name)
            except (FileNotFoundError, InvalidJobSpec, UnsafeFile):
                continue
            if settings.paused:
                full[name] = f"group {name} paused"
            elif settings.parallel is not None and running[name] >= settings.parallel:
                full[name] = f"group {name} {running[name]}/{settings.parallel}"
        return full

    def groups(self) -> list[GroupInfo]:
        """Every group with a limit or with jobs not ended, by name."""
        counts: dict[str, collections.Counter[State]] = collections.defaultdict(collections.Counter)
        for status in self.statuses():
            if not status.state.is_final:
                counts[status.spec.queue_group][status.state] += 1
        infos = {}
        for name in self.dir.groups.names():
            try:
                settings = self.dir.groups.read(name)
                infos[name] = GroupInfo(name, settings.parallel, settings.paused)
            except FileNotFoundError:
                continue
            except (InvalidJobSpec, UnsafeFile) as exc:
                infos[name] = GroupInfo(name, None, problem=str(exc))
        for name in counts.keys() - infos.keys():
            infos[name] = GroupInfo(name, None)
        return [GroupInfo(info.name, info.parallel, info.paused,
                          counts[name][State.RUNNING] + counts[name][State.PAUSED], counts[name][State.QUEUED],
                          counts[name][State.WAITING], info.problem)
                for name, info in sorted(infos.items())]
