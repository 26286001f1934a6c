#!/usr/bin/env bash
# Bring back what a bench/device_queue.py session made (device side, into $OUT; at most 8 files come back):
# rows (reproduce.jsonl, diversity.jsonl, ...), the runs' logs, metrics and configs (no weights), the token sets'
# reports and codes (no encoder weights), and the queue's own log and status.
#   bash bench/collect_device.sh            (W=/tmp/w, RUNS=/tmp/repro, Q=/tmp/q)
set -u
W=${W:-/tmp/w}; RUNS=${RUNS:-/tmp/repro}; Q=${Q:-/tmp/q}
mkdir -p "$OUT"
cp "$W"/out/*.jsonl "$OUT/" 2>/dev/null
[ -d "$RUNS" ] && (cd "$RUNS" && tar czf "$OUT/runs.tgz" --exclude='*.safetensors' --exclude='*.pt' \
  --exclude='checkpoint*' --exclude='tokens' --exclude='embeddings' --exclude='item_emb.npy' \
  --exclude='z_hat.npy' --exclude='*.parquet' $(ls -d * 2>/dev/null))
[ -d "$W/.gpu/tok" ] && (cd "$W/.gpu/tok" && tar czf "$OUT/tok.tgz" --exclude='model.safetensors' --exclude='z_hat.npy' .)
tar czf "$OUT/queue.tgz" -C "$(dirname "$Q")" "$(basename "$Q")" $( [ -f "$Q.log" ] && echo "$(basename "$Q").log")
ls -la "$OUT"
