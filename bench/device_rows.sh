#!/usr/bin/env bash
# Issue 11 on the device: several reproduce.sh rows side by side on one card, then pack what comes back.
#   JOBS="beauty:published:full beauty:letter:full:tiger" MINUTES=8.3 bash bench/device_rows.sh
# Each job is DATASET:TOKENS:VARIANT[:PRESET[:SEEDS]] (SEEDS comma-separated, default 0,1). Runs resume from
# $RUNS (default /tmp/repro) on a warm machine; finished rows land in $OUT/reproduce.jsonl, and the runs'
# logs, metrics and configs in $OUT/runs.tgz.
set -u
OUT=${OUT:-bench/out/reproduce}; RUNS=${RUNS:-/tmp/repro}; mkdir -p "$OUT" "$RUNS"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
for job in $JOBS; do
  IFS=: read -r d t v p s <<< "$job"
  ( [ -n "$p" ] && export PRESET=$p; OUT=$OUT RUNS=$RUNS SEEDS="$(echo "${s:-0,1}" | tr , ' ')" bash bench/reproduce.sh "$d" "$t" "$v" ) &
done
wait
cat "$OUT/reproduce.jsonl" 2>/dev/null | cut -c1-400
( cd "$RUNS" && tar czf "$OUT/runs.tgz" --exclude='*.safetensors' --exclude='*.pt' --exclude='checkpoint*' *.log */*.json */*.jsonl 2>/dev/null )
grep -h -E "epoch|stopped|test" "$RUNS"/*.log | tail -n 12
