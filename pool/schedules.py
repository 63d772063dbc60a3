"""Schedules: a job that fires again and again, on a cron line or every so long. This
module owns their format (a schedule file and the manager's record of its firings) and
their arithmetic (which slots fall between two moments, and each slot's job id); it
does no I/O but through the ``Folder`` it is given.

    schedules/NAME.json    the schedule, as its user wrote it (`pool schedule add`, or by
                           hand): when, and the job to fire
    schedules/NAME.state   the manager's record: every slot up to ``through`` is handled
                           (fired, skipped, or missed as ``catch_up`` says), the last job
                           fired, how many were fired and skipped

Each firing is an ordinary job whose id is the schedule's name and its slot
(``nightly-20261129T0300``, the slot's wall time in the schedule's zone; an interval's
slot is in UTC, ``...Z``). The manager creates the job first and writes the record after:
a manager killed between the two finds the job there, so a slot fires at most once
whatever happens. A local time that does not exist (the hour skipped when clocks go
forward) is no slot; one that happens twice (the hour repeated) is one slot, its first.

Cron lines are read by cronsim (``pip install 'spoolpool[cron]'``), imported only when a
schedule has one: the core install stays four packages, and ``every`` needs none.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

import orjson

from .errors import InvalidJobSpec
from .jobfile import parse_job
from .model import iso_time, parse_time
from .namedfiles import MAX_DOCUMENT_BYTES, NamedFiles
from .rules import MAX_SECONDS, did_you_mean, is_time, parse_duration, shown_value
from .safeio import Folder, Owners, UnsafeFile

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}\Z")  # leaves room in a job id for its slot
CATCH_UPS = ("latest", "none", "all")
OVERLAPS = ("skip", "queue", "allow")
MAX_CATCH_UP = 100  # slots fired at once at most: "all" after a month away is not 40,000 jobs
MIN_EVERY = 1.0  # seconds
MAX_CRON_LENGTH = 200
# The schedule says when, and which firing waits for which (``overlap``): a job of its own
# cannot say either.
NOT_IN_JOB = ("id", "at", "delay", "after", "after_policy")
KEYS = ("cron", "every", "tz", "catch_up", "overlap", "paused", "job")
CRON_EXTRA = "cron schedules need cronsim: pip install 'spoolpool[cron]'"
EXAMPLE_SLOT = datetime(2000, 1, 1, tzinfo=timezone.utc).timestamp()


class InvalidSchedule(InvalidJobSpec):
    """A schedule that cannot be kept: what is wrong, in one line."""


@dataclass(frozen=True)
class Schedule:
    name: str
    job: Mapping[str, Any]  # a job document without an id: each firing is one such job
    cron: str | None = None
    every: float | None = None  # seconds
    tz: str | None = None  # an IANA zone; None: this machine's local time
    catch_up: str = "latest"  # slots missed while no manager ran: the latest, none, or all
    overlap: str = "skip"  # a slot due while the last firing still runs: skip, queue after it, or allow
    paused: bool = False

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"cron": self.cron} if self.cron is not None else {"every": self.every}
        if self.tz is not None:
            doc["tz"] = self.tz
        doc.update(catch_up=self.catch_up, overlap=self.overlap, paused=self.paused, job=dict(self.job))
        return doc

    @property
    def zone(self) -> tzinfo | None:
        from zoneinfo import ZoneInfo  # a schedule's only: not on every command's way

        return ZoneInfo(self.tz) if self.tz is not None else None

    @property
    def when(self) -> str:
        """How often, as a person says it: ``cron 0 3 * * * (Europe/Madrid)``, ``every 15m``."""
        if self.cron is None:
            return f"every {shown_duration(self.every or 0)}"
        return f"cron {self.cron}" + (f" ({self.tz})" if self.tz else "")

    # ------------------------------------------------------------ slots
    def slots(self, after: float, upto: float, limit: int) -> list[float]:
        """The newest ``limit`` slots in (``after``, ``upto``] (epoch seconds), oldest first."""
        if limit <= 0 or upto <= after:
            return []
        if self.every is not None:
            first, last = math.floor(after / self.every) + 1, math.floor(upto / self.every)
            return [k * self.every for k in range(max(first, last - limit + 1), last + 1)]
        found: list[float] = []
        for moment in self._cron_moments(upto, reverse=True):
            if moment <= after:
                break
            if moment <= upto:
                found.append(moment)
                if len(found) == limit:
                    break
        return found[::-1]

    def next_after(self, moment: float) -> float | None:
        """The first slot after ``moment``; None when there is none within 50 years."""
        if self.every is not None:
            return (math.floor(moment / self.every) + 1) * self.every
        for found in self._cron_moments(moment, reverse=False):
            if found > moment:
                return found
        return None

    def _cron_moments(self, start: float, reverse: bool) -> Iterator[float]:
        """The cron line's times from ``start`` on (or back), as epoch seconds: walked in
        the zone's wall time, so a time the clocks skip is left out and one they repeat
        comes once (its first)."""
        cronsim = import_cronsim()
        zone = self.zone
        wall = datetime.fromtimestamp(math.floor(start), zone).replace(tzinfo=None)
        walk = cronsim.CronSim(self.cron or "", wall + timedelta(seconds=1) if reverse else wall, reverse=reverse)
        while True:
            try:
                found = next(walk)
            except StopIteration:  # nothing within 50 years
                return
            moment = wall_moment(found, zone)
            if moment is not None:
                yield moment

    def slot_id(self, slot: float) -> str:
        """The job id of the slot's firing: the same whenever and however often it is asked."""
        if self.every is not None:
            form = "%Y%m%dT%H%MZ" if self.every % 60 == 0 else "%Y%m%dT%H%M%SZ"
            return f"{self.name}-{datetime.fromtimestamp(slot, timezone.utc).strftime(form)}"
        seconds = len((self.cron or "").split()) == 6
        wall = datetime.fromtimestamp(slot, self.zone)
        return f"{self.name}-{wall.strftime('%Y%m%dT%H%M%S' if seconds else '%Y%m%dT%H%M')}"

    def job_document(self, job_id: str, after: str | None = None) -> dict[str, Any]:
        """The job of one firing (``after``: the firing before it, which it waits for)."""
        doc = {**self.job, "id": job_id}
        doc.setdefault("name", self.name)
        if after is not None:
            doc.update(after=[after], after_policy="finished")
        return doc


def wall_moment(wall: datetime, zone: tzinfo | None) -> float | None:
    """The epoch time of a naive wall time in ``zone`` (None: local), its first if the
    clocks repeat it; None when the clocks skip it."""
    first = wall.replace(tzinfo=zone, fold=0) if zone is not None else wall.replace(fold=0)
    moment = first.timestamp()
    back = datetime.fromtimestamp(moment, zone).replace(tzinfo=None)
    return moment if back == wall else None


def import_cronsim() -> Any:
    try:
        import cronsim
    except ImportError:
        raise InvalidSchedule(CRON_EXTRA) from None
    return cronsim


def shown_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


# ---------------------------------------------------------------- parsing
def parse_schedule(doc: object, name: str, where: str | None = None) -> Schedule:
    """Check a schedule document as a job file is checked. Raises InvalidSchedule naming
    what is wrong."""
    where = where or f"schedule {name!r}"
    if NAME_PATTERN.match(name) is None:
        raise InvalidSchedule(f"{where}: a schedule's name is 1-40 letters, digits, '_' or '-', starting with a "
                              "letter or digit")
    if not isinstance(doc, dict):
        raise InvalidSchedule(f"{where}: a schedule must be a JSON object, got {type(doc).__name__}")
    for key in doc:
        if key not in KEYS:
            raise InvalidSchedule(f"{where}: unknown key {shown_value(key)}{did_you_mean(key, KEYS)}")
    if ("cron" in doc) == ("every" in doc):
        raise InvalidSchedule(f"{where}: a schedule needs exactly one of 'cron' and 'every'")
    tz = doc.get("tz")
    if tz is not None:
        check_zone(tz, where)
    schedule = Schedule(name=name, job=parse_template(doc.get("job"), name, where), tz=tz,
                        catch_up=choice(doc, "catch_up", CATCH_UPS, where),
                        overlap=choice(doc, "overlap", OVERLAPS, where), paused=flag(doc, "paused", where))
    if "cron" in doc:
        return _with_cron(schedule, doc["cron"], where)
    every = parse_duration(doc["every"])
    if every is None or not MIN_EVERY <= every <= MAX_SECONDS:
        raise InvalidSchedule(f"{where}: 'every' must be a duration like 30s, 15m, 2h, 1d, from {MIN_EVERY:g}s to a "
                              f"year, got {shown_value(doc['every'])}")
    return Schedule(**{**schedule.__dict__, "every": every})


def _with_cron(schedule: Schedule, cron: object, where: str) -> Schedule:
    if not isinstance(cron, str) or not cron.strip() or len(cron) > MAX_CRON_LENGTH:
        raise InvalidSchedule(f"{where}: 'cron' must be a cron line like '0 3 * * *', got {shown_value(cron)}")
    cronsim = import_cronsim()
    line = " ".join(cron.split())
    try:
        cronsim.CronSim(line, datetime(2000, 1, 1))
    except cronsim.CronSimError as exc:
        raise InvalidSchedule(f"{where}: cron line {line!r} does not parse: {exc}") from None
    schedule = Schedule(**{**schedule.__dict__, "cron": line})
    if schedule.next_after(EXAMPLE_SLOT) is None:
        raise InvalidSchedule(f"{where}: cron line {line!r} never fires")
    return schedule


def check_zone(tz: object, where: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        if not isinstance(tz, str) or len(tz) > 100:
            raise ValueError
        ZoneInfo(tz)
    except (ValueError, ZoneInfoNotFoundError, OSError):
        raise InvalidSchedule(f"{where}: time zone {shown_value(tz)} does not exist (a name like Europe/Madrid, or "
                              "leave it out for this machine's local time)") from None


def choice(doc: Mapping[str, Any], key: str, allowed: tuple[str, ...], where: str) -> str:
    value = doc.get(key, allowed[0])
    if value not in allowed:
        raise InvalidSchedule(f"{where}: '{key}' must be one of {', '.join(allowed)}, got {shown_value(value)}")
    return str(value)


def flag(doc: Mapping[str, Any], key: str, where: str) -> bool:
    value = doc.get(key, False)
    if not isinstance(value, bool):
        raise InvalidSchedule(f"{where}: '{key}' must be true or false, got {shown_value(value)}")
    return value


def parse_template(job: object, name: str, where: str) -> dict[str, Any]:
    """The job each firing is: checked whole, as the job of one slot."""
    if not isinstance(job, dict):
        raise InvalidSchedule(f"{where}: 'job' must be a job object ({{\"task\": ...}} or {{\"command\": [...]}}), "
                              f"got {shown_value(job)}")
    for key in NOT_IN_JOB:
        if key in job:
            raise InvalidSchedule(f"{where}: its job cannot have {key!r}: the schedule says when it runs (and "
                                  "'overlap': 'queue' makes each firing wait for the one before)")
    try:
        parse_job({**job, "id": f"{name}-20000101T0000"}, f"{where}, its job", default_name=name)
    except InvalidJobSpec as exc:
        raise InvalidSchedule(str(exc)) from None
    return job


# ---------------------------------------------------------------- the manager's record
@dataclass(frozen=True)
class Record:
    """What the manager did of a schedule: every slot up to ``through`` is handled."""

    through: str  # ISO 8601 UTC
    last_job: str | None = None
    fired: int = 0
    skipped: int = 0  # slots not fired: the last firing still ran (overlap "skip"), or missed

    @property
    def through_time(self) -> float:
        return parse_time(self.through).timestamp()

    def to_json(self) -> bytes:
        return orjson.dumps({"through": self.through, "last_job": self.last_job, "fired": self.fired,
                             "skipped": self.skipped})


def parse_record(data: bytes) -> Record | None:
    """A record as the manager wrote it; None when it is not one (then the schedule
    counts from its file's time, as a new one)."""
    try:
        doc = orjson.loads(data)
        through, last_job = doc["through"], doc.get("last_job")
        fired, skipped = doc.get("fired", 0), doc.get("skipped", 0)
    except (ValueError, KeyError, TypeError):
        return None
    if not is_time(through) or not (last_job is None or isinstance(last_job, str)) or not all(
            isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**63 for n in (fired, skipped)):
        return None
    return Record(through=through, last_job=last_job, fired=fired, skipped=skipped)


def utc_text(moment: float) -> str:
    return iso_time(datetime.fromtimestamp(moment, timezone.utc))


# ---------------------------------------------------------------- the folder
class ScheduleBook(NamedFiles[Schedule]):
    """schedules/: the files of every schedule (its owner's) and the manager's records (the
    same user's); in a shared spool the group reads both (`pool schedule list`), as it
    reads statuses: a schedule's job, like a status, is no place for a secret."""

    def __init__(self, folder: Folder, owners: Callable[[], Owners], mode: Callable[[], int]) -> None:
        super().__init__(folder, owners, mode, parse_schedule, Schedule.to_dict)

    def record(self, name: str) -> Record | None:
        try:
            return parse_record(self.folder.read(f"{name}.state", self.owners, MAX_DOCUMENT_BYTES))
        except (FileNotFoundError, UnsafeFile):
            return None

    def write_record(self, name: str, record: Record) -> None:
        self.folder.write_atomic(f"{name}.state", record.to_json(), self.mode)

    def remove(self, name: str) -> bool:
        """Forget the schedule and its record; False when there was none."""
        found = super().remove(name)
        self.folder.unlink(f"{name}.state")
        return found
