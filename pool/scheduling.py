"""The manager's step for schedules: it keeps each schedule's next slot as a deadline,
and when one comes, fires it: an ordinary job, created as intake creates one.

    schedules/ changed, or the rescan tick --> look: read what changed; a bad file goes
                                               to rejected/ with its reason
    a slot's time came --> fire: the slots due since the record's ``through``, as
                           ``catch_up`` says for those missed while no manager ran, and
                           ``overlap`` says while the last firing still runs --> each a
                           job (its id: the slot's) --> the record, written after

A job whose id is already in the spool was fired by a manager killed before it wrote
the record: it is taken as fired, never created twice (pool/schedules.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .context import Context
from .errors import CorruptStatus, InvalidJobSpec, JobNotFound
from .jobfile import parse_job
from .model import JobSpec, new_status
from .safeio import UnsafeFile
from .schedules import MAX_CATCH_UP, InvalidSchedule, Record, Schedule, utc_text

log = logging.getLogger(__name__)


@dataclass
class Plan:
    schedule: Schedule
    stamp: tuple[int, int, int]
    record: Record
    next_at: float | None  # wall-clock time of the next slot (None: never)


class Scheduler:
    """``refusal``: why this manager cannot run a job (as intake refuses one), or None;
    ``known``: whether a job id is taken (in the spool, or being taken in)."""

    def __init__(self, ctx: Context, refusal: Callable[[JobSpec], str | None], known: Callable[[str], bool]) -> None:
        self.ctx = ctx
        self.book = ctx.spool.schedules
        self.refusal = refusal
        self.known = known
        self.plans: dict[str, Plan] = {}
        self.started = ctx.clock.time()  # slots before this passed while no manager ran: missed

    # ------------------------------------------------------------ looking at schedules/
    def look(self) -> None:
        """Read every schedule whose file changed; forget those that are gone."""
        names = self.book.names()
        for name in set(self.plans) - set(names):
            log.info("schedule %s: removed", name)
            del self.plans[name]
        for name in names:
            stamp = self.book.stamp(name)
            plan = self.plans.get(name)
            if stamp is None or (plan is not None and plan.stamp == stamp):
                continue
            try:
                schedule = self.book.read(name)
                refused = self.refusal(parse_job(schedule.job_document(schedule.slot_id(self.started)),
                                                 f"schedules/{name}.json", name))
                if refused:
                    raise InvalidSchedule(f"schedules/{name}.json: its job: {refused}")
            except FileNotFoundError:
                self.plans.pop(name, None)
                continue
            except (InvalidJobSpec, UnsafeFile) as exc:
                self._reject(name, str(exc) if isinstance(exc, InvalidJobSpec) else f"schedules/{name}.json {exc}")
                continue
            record = self.book.record(name) or Record(through=utc_text(self.book.written_at(name)))
            if plan is None:
                log.info("schedule %s: %s, next at %s", name, schedule.when,
                         self._shown(schedule.next_after(max(record.through_time, self.ctx.clock.time()))))
            self.plans[name] = Plan(schedule, stamp, record, schedule.next_after(record.through_time))

    def _reject(self, name: str, reason: str) -> None:
        log.warning("rejected schedules/%s.json: %s", name, reason)
        self.plans.pop(name, None)
        self.ctx.spool.drop.reject_from(self.book.folder, f"{name}.json", f"schedule.{name}.json", reason)

    def _shown(self, moment: float | None) -> str:
        return "never" if moment is None else utc_text(moment)

    # ------------------------------------------------------------ firing
    def next_deadline(self, now: float) -> float | None:
        """The monotonic time of the nearest slot."""
        times = [p.next_at for p in self.plans.values() if p.next_at is not None]
        if not times:
            return None
        return now + max(0.0, min(times) - self.ctx.clock.time())

    def fire_due(self) -> None:
        now = self.ctx.clock.time()
        for plan in list(self.plans.values()):
            if plan.next_at is not None and plan.next_at <= now:
                self._fire(plan, now)

    def _fire(self, plan: Plan, now: float) -> None:
        schedule, record = plan.schedule, plan.record
        slots = schedule.slots(record.through_time, now, MAX_CATCH_UP)
        on_time = [s for s in slots if s >= self.started]
        missed = [s for s in slots if s < self.started]
        chosen = on_time + {"all": missed, "latest": missed[-1:], "none": []}[schedule.catch_up]
        chosen.sort()
        if schedule.paused:
            chosen = []
        skipped = len(slots) - len(chosen)
        last_job, fired = record.last_job, record.fired
        for slot in chosen:
            job_id = schedule.slot_id(slot)
            if not self.known(job_id):  # else fired by a manager killed before it wrote the record
                running = self._still_running(last_job)
                if running and schedule.overlap == "skip":
                    log.info("schedule %s: slot %s skipped: %s still runs", schedule.name, utc_text(slot), last_job)
                    skipped += 1
                    continue
                after = last_job if running and schedule.overlap == "queue" else None
                spec = parse_job(schedule.job_document(job_id, after), f"schedules/{schedule.name}.json",
                                 schedule.name)
                self.ctx.ledger.create(new_status(spec, utc_text(now)),
                                       f"fired by schedule {schedule.name} (slot {utc_text(slot)})")
            last_job, fired = job_id, fired + 1
        if missed and not schedule.paused:
            log.info("schedule %s: %d slot(s) passed while no manager ran; catch_up %s fired %d",
                     schedule.name, len(missed), schedule.catch_up, len([s for s in chosen if s < self.started]))
        through = max(slots[-1] if slots else record.through_time, record.through_time)
        plan.record = Record(through=utc_text(through), last_job=last_job, fired=fired,
                             skipped=record.skipped + skipped)
        self.book.write_record(schedule.name, plan.record)
        plan.next_at = schedule.next_after(max(through, now))

    def _still_running(self, job_id: str | None) -> bool:
        """Whether the schedule's last firing has not ended (queued, waiting, running)."""
        if job_id is None:
            return False
        try:
            return not self.ctx.spool.read_status(job_id).state.is_final
        except (JobNotFound, CorruptStatus):
            return False
