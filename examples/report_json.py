"""An existing script adds one line of output to report progress: a JSON object a line.
Run it as a command job and its status shows the fraction and the message."""

import json
import time

items = ["alpha", "beta", "gamma", "delta", "epsilon"]
for n, item in enumerate(items, start=1):
    time.sleep(0.05)  # the real work
    print(json.dumps({"progress": n / len(items), "message": f"processed {item}"}), flush=True)
