"""How a manager stops, and the signal that asks for each way (`pool stop`, systemd's
KillSignal= in the unit `pool service` writes)."""

from __future__ import annotations

import enum
import signal


class StopMode(str, enum.Enum):
    """How a manager stops (`pool stop`, and the signal each sends). In every one it takes
    no new job; queued jobs stay queued for the next manager."""

    INTERRUPT = "interrupt"  # SIGTERM, SIGINT: running jobs get the grace, then are stopped (queued again)
    DRAIN = "drain"  # SIGUSR1: running jobs end as they will, however long that takes
    DETACH = "detach"  # SIGUSR2: it goes now; running jobs run on, for the next manager to take over


STOP_SIGNALS = {signal.SIGINT: StopMode.INTERRUPT, signal.SIGTERM: StopMode.INTERRUPT,
                signal.SIGUSR1: StopMode.DRAIN, signal.SIGUSR2: StopMode.DETACH}
SIGNAL_FOR = {StopMode.INTERRUPT: signal.SIGTERM, StopMode.DRAIN: signal.SIGUSR1, StopMode.DETACH: signal.SIGUSR2}
