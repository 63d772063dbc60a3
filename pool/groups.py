"""Groups: jobs that share a limit of their own (``"group": "gpu"``: at most ``parallel``
of them at a time, whatever the number of workers). This module owns a group's file,
``groups/NAME.json`` (``pool group set``, or by hand); the limit is kept by dispatch.

A group with no file, or whose file sets no ``parallel``, is bounded by the workers only,
as the jobs with no group are. A job handed to a worker counts against its group from
then on, also when it was sent ahead to a busy one and has not begun.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import InvalidJobSpec
from .model import GROUP_PATTERN
from .namedfiles import NamedFiles
from .requests import MAX_WORKERS
from .rules import did_you_mean, is_int, shown_value
from .safeio import Folder, Owners

KEYS = ("parallel", "paused")


class InvalidGroup(InvalidJobSpec):
    """A group's file that cannot be kept: what is wrong, in one line."""


@dataclass(frozen=True)
class GroupSettings:
    name: str
    parallel: int | None = None  # jobs of the group at a time; None: as many as the workers run
    paused: bool = False  # starts nothing (`pool pause --group`): running ones run on

    def to_dict(self) -> dict[str, Any]:
        return {"parallel": self.parallel, "paused": self.paused}


def check_group_name(name: str, where: str) -> None:
    if GROUP_PATTERN.match(name) is None:
        raise InvalidGroup(f"{where}: a group's name is 1-40 letters, digits, '_' or '-', starting with a letter "
                           "or digit")


def parse_group(doc: object, name: str, where: str | None = None) -> GroupSettings:
    where = where or f"group {name!r}"
    check_group_name(name, where)
    if not isinstance(doc, dict):
        raise InvalidGroup(f"{where}: a group must be a JSON object, got {type(doc).__name__}")
    for key in doc:
        if key not in KEYS:
            raise InvalidGroup(f"{where}: unknown key {shown_value(key)}{did_you_mean(key, KEYS)}")
    parallel = doc.get("parallel")
    if parallel is not None and not (is_int(parallel) and 1 <= parallel <= MAX_WORKERS):
        raise InvalidGroup(f"{where}: 'parallel' must be a number of jobs from 1 to {MAX_WORKERS}, or null, got "
                           f"{shown_value(parallel)}")
    paused = doc.get("paused", False)
    if not isinstance(paused, bool):
        raise InvalidGroup(f"{where}: 'paused' must be true or false, got {shown_value(paused)}")
    return GroupSettings(name, parallel, paused)


class GroupBook(NamedFiles[GroupSettings]):
    """groups/: the owner's; the group of a shared spool reads it (`pool group list`)."""

    def __init__(self, folder: Folder, owners: Callable[[], Owners], mode: Callable[[], int]) -> None:
        super().__init__(folder, owners, mode, parse_group, GroupSettings.to_dict)
