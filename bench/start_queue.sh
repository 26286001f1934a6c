#!/usr/bin/env bash
# Start bench/device_queue.py on the device in the work tree that bench/stage_device.sh made (/tmp/w), detached
# (setsid), so its jobs outlive the device call; rows go to /tmp/w/out (not the call's $OUT, which the next call
# empties), runs to /tmp/repro, the queue's log to /tmp/q.log.
#   bash bench/start_queue.sh bench/queues/next.jobs 25        (deadline in minutes from now; SLOTS=4 per card)
set -eu
JOBS=$1; MIN=${2:-25}
cd "${W:-/tmp/w}"
[ -f "$JOBS" ] || { echo "start_queue: no $JOBS in $PWD (bash bench/stage_device.sh first)" >&2; exit 2; }
. bench/device_env.sh
export OUT=$PWD/out
mkdir -p out
setsid nohup python3 bench/device_queue.py run "$JOBS" --dir /tmp/q --slots "${SLOTS:-4}" --deadline-min "$MIN" \
  > /tmp/q.log 2>&1 < /dev/null &
sleep "${WAIT:-20}"; cat /tmp/q.log
