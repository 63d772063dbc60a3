"""An attacker's program: holds a write lease (fcntl F_SETLEASE) on each file it is given,
and takes it again every time it is broken, until it is killed. It prints "held" once
it holds every one.

    python lease_holder.py FILE...
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import sys

from pool.inotify import IN_CLOSE_WRITE, open_watches

F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)
IN_CLOSE_NOWRITE = 0x00000010


def main(paths: list[str]) -> None:
    # It waits for what lets it take a lease again, never for a time: a break (SIGIO,
    # after which it takes it again at once) or another process closing a file (one
    # that had it open when it tried). Both are queued, so none is missed between a
    # try and the wait.
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGIO, lambda signum, frame: None)  # told of a break: it does not let go
    signal.set_wakeup_fd(wake_w)
    opened = open_watches([(path, IN_CLOSE_WRITE | IN_CLOSE_NOWRITE) for path in paths])
    assert opened is not None and min(opened[1]) >= 0, "inotify is needed to hear of closes"
    closes = opened[0]
    fds = [os.open(path, os.O_RDWR) for path in paths]
    announced = False
    while True:
        held = 0
        for fd in fds:
            try:
                fcntl.fcntl(fd, F_SETLEASE, fcntl.F_WRLCK)
                held += 1
            except OSError:
                pass  # someone has it open this instant: again once they close it
        if held == len(fds) and not announced:
            print("held", flush=True)
            announced = True
        select.select([wake_r, closes], [], [])
        for fd in (wake_r, closes):
            try:
                while os.read(fd, 65536):
                    pass
            except BlockingIOError:
                pass


if __name__ == "__main__":
    main(sys.argv[1:])
