#!/usr/bin/env bash
# One device call between a queue's start and its end: wait, show the queue, bring back what has finished
# (bench/collect_device.sh into $OUT), so a machine that goes back loses only what finished since this call.
# Issue the next call at once when this one returns: a machine idle for 30 s goes back with all of /tmp.
#   bash bench/poll_device.sh 540          (seconds to wait; keep it under the call's 600 s limit)
set -u
sleep "${1:-540}"
python3 "${W:-/tmp/w}/bench/device_queue.py" status --dir "${Q:-/tmp/q}" --tail "${TAIL:-2}"
nvidia-smi --query-gpu=index,memory.used,utilization.gpu --format=csv,noheader 2>/dev/null
bash "$(dirname "$0")/collect_device.sh" > /dev/null
ls "$OUT"
