"""A script with a tqdm bar: run as a command job, the bar becomes the job's progress,
with no change to the script."""

import time

from tqdm import tqdm

for _ in tqdm(range(20), desc="crunching"):
    time.sleep(0.02)
