"""Imported first by the forkserver that starts a manager's workers (its preload list):
it moves the forkserver into a process group of its own.

A signal to the manager's process group (what `timeout`, `kill -- -PGID` and service
supervisors send) must reach the manager, which then stops its jobs in order; had it also
reached the forkserver, multiprocessing would report every worker dead at once and the
manager would exit while their jobs ran on. (The forkserver is started by fork and exec,
so the manager cannot move it afterwards: it must move itself.)
"""

import os
import sys

if sys.argv[:1] == ["-c"] and "multiprocessing.forkserver" in sys.modules and os.getpid() != os.getpgrp():
    os.setpgid(0, 0)
