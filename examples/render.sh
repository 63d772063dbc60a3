#!/bin/sh
# A long-running script that knows nothing about pool: it prints NN% as it works.
# Usage: render.sh [STEPS] [SECONDS_PER_STEP]
steps=${1:-20}
pause=${2:-0.1}
i=1
while [ "$i" -le "$steps" ]; do
    sleep "$pause"
    echo "rendering: $((i * 100 / steps))%"
    i=$((i + 1))
done
echo "render complete"
