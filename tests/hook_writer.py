"""An on-finish hook for the tests: keeps what it was given (its stdin, its environment)
in OUT/<job id>.<n>.json, n counting its runs for that job; then, as told, exits 3 or
hangs."""

import json
import os
import signal
import sys
from pathlib import Path

out = Path(sys.argv[1])
job_id = os.environ["POOL_JOB_ID"]
runs = len(list(out.glob(f"{job_id}.*.json")))
seen = {"stdin": json.loads(sys.stdin.read()),
        "env": {k: os.environ[k] for k in ("POOL_JOB_ID", "POOL_STATE", "POOL_EXIT_CODE", "POOL_SPOOL")}}
tmp = out / f".{job_id}.tmp"
tmp.write_text(json.dumps(seen))
tmp.rename(out / f"{job_id}.{runs}.json")
how = sys.argv[2] if len(sys.argv) > 2 else "ok"
print(f"hook for {job_id}: {how}")
if how == "fail":
    sys.exit(3)
if how == "hang":
    while True:  # the hook's work: nothing, until its timeout kills it
        signal.pause()
