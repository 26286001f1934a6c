#!/usr/bin/env bash
# Device side of bench/pack_device.sh: make the work tree /tmp/w (a copy of src/ and bench/, made once per warm
# machine, so later calls' tree copies cannot disturb running jobs) and move a carried folder's inputs into
# /tmp/w/.gpu, one path at a time with `mv` (atomic: a queue job waiting for data/toys/stats.json never sees half
# a dataset); wheels go to /tmp/site2, GGUF parts to /tmp/llm, run-state parts (bench/run_state.sh) to /tmp/state. Prints the environment line for the queue.
#   bash bench/stage_device.sh .gpu/carry1
set -eu
W=${W:-/tmp/w}; C=$1
if [ ! -d "$W/src" ]; then mkdir -p "$W/.gpu" "$W/out"; cp -r src bench "$W/"; fi
rm -rf /tmp/stage; cp -r "$C" /tmp/stage
if [ -d /tmp/stage/whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site2 /tmp/stage/whl/*.whl
  rm -rf /tmp/stage/whl
fi
if [ -d /tmp/stage/llm ]; then  # mv, not cp: the queue's join job must never read half a part
  mkdir -p /tmp/llm; for f in /tmp/stage/llm/*; do rm -rf "/tmp/llm/$(basename "$f")"; mv "$f" /tmp/llm/; done
  rm -rf /tmp/stage/llm
fi
if [ -d /tmp/stage/state ]; then  # parts of runs from an earlier lease (bench/run_state.sh restore joins them)
  mkdir -p /tmp/state; for f in /tmp/stage/state/*; do rm -rf "/tmp/state/$(basename "$f")"; mv "$f" /tmp/state/; done
  rm -rf /tmp/stage/state
fi
cd /tmp/stage
for p in */*; do
  [ -e "$p" ] || continue
  mkdir -p "$W/.gpu/$(dirname "$p")"; rm -rf "$W/.gpu/$p"; mv "$p" "$W/.gpu/$p"; echo "staged .gpu/$p"
done
