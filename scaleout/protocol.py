"""What the hub and its workers say to each other, and where, on one Redis.

    hub --Celery task "pool.attempt" {token, job}--> queue pool.task.<module> | pool.commands
    worker --claim(token) [Lua: sent -> running, lease set]--> runs it, or skips it
    worker --XADD pool:events:<token> {kind, data, worker}--> hub (XREAD, on from the last entry read)
        kinds: message (a runner's pool message: Started, Progressed, Ran, Broke, as bytes),
               log (output, with its offset), exit ({how, began, stopped}), skipped ({why})
    hub --cancel(token) [Lua: sent -> cancelled | running -> cancel flag]--> the worker looks each turn

Each attempt has a stream of its own, read by the hub from its start (a new hub, after
the last one was killed, reads again what it may have missed: a message heard twice
changes nothing, a log piece is written once by its offset) and removed once its end
is written.

Only JSON crosses the broker (a Celery message of any other content type is refused),
and a token is claimed at most once, however often its message is delivered: so one
attempt runs at most once, and the hub's spool stays the only truth (only the hub
writes it). A worker renews its lease on a running attempt (``pool:lease:<token>``, a
TTL); one that cannot renew for most of the TTL kills its attempt itself, and the hub
calls an attempt whose lease has gone lost: never two copies at once.
"""

from __future__ import annotations

import re
from typing import Any

from pool.model import JobStatus

TASK_NAME = "pool.attempt"
COMMANDS_QUEUE = "pool.commands"
# An attempt's lease lasts this long unless renewed (`pool worker --lease`): the hub calls
# an attempt lost once its lease is gone; its worker renews it every fifth of that, and
# kills the attempt itself once two thirds have passed with no renewal, before the hub
# may run it again elsewhere.
LEASE_TTL = 15.0
RENEW_SHARE = 0.2
SELF_FENCE_SHARE = 2 / 3
WORKER_TTL = 10.0  # seconds a worker's announcement lasts unless renewed
ANNOUNCE_EVERY = 2.0
ATTEMPT_KEEP = 7 * 86400  # seconds an attempt's record is kept, at most
MODULE = re.compile(r"[A-Za-z_][\w.]*\Z")


# How hub and workers reach the broker: a dead peer found by keepalive and timeouts, not
# waited for forever.
SOCKETS: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 5, "socket_keepalive": True,
                           "health_check_interval": 10}


def connect(url: str) -> Any:
    """A Redis client of the broker (redis-py: imported with the celery extra)."""
    import redis

    return redis.Redis.from_url(url, **SOCKETS)


def celery_app(url: str, **settings: Any) -> Any:
    """A Celery app on the broker that speaks JSON only (any other content is refused)."""
    from celery import Celery

    app = Celery("pool", broker=url)
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json",
                    broker_connection_retry_on_startup=True, broker_transport_options=dict(SOCKETS), **settings)
    return app


def task_queue(module: str) -> str:
    return f"pool.task.{module}"


def queue_of(job: JobStatus) -> str:
    """The queue of the workers that may run it: one per task module, one for commands."""
    task = job.spec.task
    return COMMANDS_QUEUE if task is None else task_queue(task.partition(":")[0])


def attempt_key(token: str) -> str:
    return f"pool:attempt:{token}"


def events_key(token: str) -> str:
    return f"pool:events:{token}"


# Every word on an attempt's stream is also noted here (its token only, the last thousand
# kept): the hub's blocking read waits on this one stream besides the attempts' own, so
# the first word on an attempt's new stream wakes it at once (a read blocked on the
# streams it knew held the new one back up to its timeout: 0.3 s a tiny job).
WAKE = "pool:wake"
WAKE_KEEP = 1000


def lease_key(token: str) -> str:
    return f"pool:lease:{token}"


def cancel_key(token: str) -> str:
    """What the hub's cancel pushes, for the worker's listener to hear at once."""
    return f"pool:cancel:{token}"


def worker_key(name: str) -> str:
    return f"pool:worker:{name}"


WORKERS_PATTERN = "pool:worker:*"

# The worker's claim: only an attempt still as the hub sent it begins, once.
CLAIM = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'sent' then return state or 'gone' end
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[1])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 'claimed'
"""

# The worker's renewal: its lease only, while the attempt is still its own. A broker
# restarted with no persistence forgot both the lease and the attempt: the worker puts
# them back as they were (no other can have claimed a token nobody holds any more).
RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder == false and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[2], 'state', 'running', 'worker', ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""

# The hub's stop: an attempt not claimed yet never will be; a running one is told (its
# flag, and a word pushed on KEYS[2], if given, that its worker waits on), unless ARGV[3]
# is 'unstarted only' (a take-back: an attempt claimed a moment ago runs on).
CANCEL = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'sent' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled')
  return 'unstarted'
end
if state == 'running' and ARGV[3] ~= 'unstarted only' then
  redis.call('HSET', KEYS[1], 'cancel', ARGV[1], 'grace', ARGV[2])
  if KEYS[2] then
    redis.call('RPUSH', KEYS[2], ARGV[1])
    redis.call('PEXPIRE', KEYS[2], 600000)
  end
  return 'running'
end
return state or 'gone'
"""


def attempt_message(token: str, job: JobStatus) -> dict[str, Any]:
    return {"token": token, "job": job.to_dict()}


def checked_message(message: object) -> tuple[str, JobStatus]:
    """(token, job) of an attempt message; ValueError saying what is wrong with it."""
    if not isinstance(message, dict) or not isinstance(message.get("token"), str):
        raise ValueError("not an attempt message")
    token = message["token"]
    if not re.fullmatch(r"[0-9a-f]{32}", token):
        raise ValueError("not an attempt token")
    return token, JobStatus.from_dict(message.get("job"), f"attempt {token}")
