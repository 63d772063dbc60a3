"""Before: the work runs through subprocess.run. The caller blocks, sees no progress,
cannot cancel it, and loses it if it restarts."""

import subprocess
import sys
from pathlib import Path

RENDER = [str(Path(__file__).with_name("render.sh")), "10", "0.05"]

if __name__ == "__main__":
    completed = subprocess.run(RENDER, capture_output=True, text=True)
    print(completed.stdout.splitlines()[-1])
    sys.exit(completed.returncode)
