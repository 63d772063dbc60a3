"""Every default a user can change, in one place.

`pool serve`'s options, the manager's configuration, `pool run`'s manager, the client and
`pool kill`'s wait all read them here: a default written in five places is five defaults,
and the day one changes, a command gives up while the manager is still doing its job
(`pool kill` once waited 35 s for a manager started with `--kill-grace 60`).
"""

from __future__ import annotations

KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL when a job is killed or times out
SHUTDOWN_GRACE = 10.0  # seconds running jobs get to finish when the manager is asked to stop
SETTLE = 1.0  # seconds a file nobody is known to write must be quiet to count as complete
RESCAN_INTERVAL = 5.0  # seconds between looks at the folders when no file event comes
MAX_FILE_BYTES = 64 * 1024 * 1024  # a job file bigger than this is refused unread
EVENTS_MAX_BYTES = 32 * 1024 * 1024  # events.jsonl is rotated past this
MAX_CHECKPOINT_BYTES = 16 * 1024 * 1024  # pool.checkpoint() refuses a bigger state
RESERVE_AFTER = 10.0  # seconds the most urgent job that does not fit waits before smaller ones stop starting
HOOK_TIMEOUT = 60.0  # seconds an on-finish hook may run before it is killed
