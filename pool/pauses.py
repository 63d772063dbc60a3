"""How long an attempt has been paused: ``status/<id>.paused``, the manager's. The status
document cannot say it: its worker writes it from its own copy, which knows nothing of
the time it spent stopped. `pool status` subtracts it from the time the job ran, and the
timeout clock does not count it."""

from __future__ import annotations

from dataclasses import dataclass, replace

import orjson


@dataclass(frozen=True)
class Pauses:
    attempt: int  # the attempt paused: a record of an earlier one says nothing of this one
    seconds: float = 0.0  # paused, in all, before ``since``
    since: float | None = None  # paused now, since then (epoch seconds)

    def total(self, now: float) -> float:
        return self.seconds + (max(0.0, now - self.since) if self.since is not None else 0.0)

    def paused(self, now: float) -> Pauses:
        return self if self.since is not None else replace(self, since=now)

    def resumed(self, now: float) -> Pauses:
        return Pauses(self.attempt, self.total(now))

    def encode(self) -> bytes:
        return orjson.dumps({"attempt": self.attempt, "seconds": self.seconds, "since": self.since})


def parse_pauses(data: bytes) -> Pauses | None:
    """A record as the manager wrote it; None when it is not one (then no pause counts)."""
    try:
        doc = orjson.loads(data)
        attempt, seconds, since = doc["attempt"], doc["seconds"], doc["since"]
    except (ValueError, KeyError, TypeError):
        return None
    numbers = all(isinstance(n, (int, float)) and not isinstance(n, bool) and 0 <= n < 2**40 for n in (seconds,)) \
        and (since is None or (isinstance(since, (int, float)) and not isinstance(since, bool) and 0 < since < 2**40))
    if not (isinstance(attempt, int) and not isinstance(attempt, bool) and 1 <= attempt < 2**31) or not numbers:
        return None
    return Pauses(attempt, float(seconds), float(since) if since is not None else None)

