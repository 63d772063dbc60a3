"""An attacker's program: holds a write lease (fcntl F_SETLEASE) on each file it is given,
and takes it again every time it is broken, until it is killed. It prints "held" once
it holds every one.

    python lease_holder.py FILE...
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import time

F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)


def main(paths: list[str]) -> None:
    signal.signal(signal.SIGIO, signal.SIG_IGN)  # told of a break: it does not let go, it takes it again
    fds = [os.open(path, os.O_RDWR) for path in paths]
    announced = False
    while True:
        held = 0
        for fd in fds:
            try:
                fcntl.fcntl(fd, F_SETLEASE, fcntl.F_WRLCK)
                held += 1
            except OSError:
                pass  # someone has it open this instant: again in a moment
        if held == len(fds) and not announced:
            print("held", flush=True)
            announced = True
        time.sleep(0.005)  # the attacker's own pace, not a test's wait


if __name__ == "__main__":
    main(sys.argv[1:])
