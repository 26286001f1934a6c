#!/usr/bin/env bash
# Issue 13 on the device: TIGER's cold-start protocol on several datasets and seeds side by side on one card.
#   DATASETS="beauty yelp scientific" SEEDS="0 1" bash bench/coldstart_gpu.sh
# Inputs (carry them): .gpu/data/DATASET (sidrec data prepare) and .gpu/emb/DATASET-minilm (sidrec embed
# --encoder minilm, made on a CPU: the device image lacks the MiniLM weights, so the runs take the embeddings
# made beforehand, `--embeddings`). Each run: hold out 5% of the test targets' items, RQ-VAE on the seen items,
# TIGER (`--preset tiger`, EXTRA for more options), add the held-out items by text, rank vs semantic KNN.
# Rows {"dataset", "seed", "epsilon", "model", "slots", "rule", "levels", "tau", "recall@10", "ndcg@10", "users", "epochs",
# "stopped" (the generator's training: "time" = cut by its budget, a short-budget row)} land in
# $OUT/coldstart.jsonl (one line per row, written by the python snippet below as each run ends).
set -u
OUT=${OUT:-bench/out/coldstart}; RUNS=${RUNS:-/tmp/cold}; mkdir -p "$OUT" "$RUNS"
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
for d in ${DATASETS:-beauty yelp scientific}; do
  for s in ${SEEDS:-0 1}; do
    R=$RUNS/$d-s$s
    ( python3 -m sidrec evaluate-coldstart .gpu/data/$d --out $R --embeddings .gpu/emb/$d-minilm --seed $s \
        --epsilon 0.1 --epsilon 0.2 --epsilon 0.3 --epsilon 0.5 --preset ${PRESET:-tiger} ${EXTRA:-} > $R.log 2>&1
      python3 - "$R/coldstart.json" "$d" "$s" >> "$OUT/coldstart.jsonl" <<'PY'
import json, sys
from pathlib import Path
res = json.load(open(sys.argv[1]))
m = Path(sys.argv[1]).parent / "run" / "metrics.json"  # how the generator's training ended (time = short budget)
m = json.loads(m.read_text()) if m.is_file() else {}
for r in res["rows"]:
    print(json.dumps({"dataset": sys.argv[2], "seed": int(sys.argv[3]), **{k: r[k] for k in
          ("epsilon", "model", "slots", "rule", "levels", "tau", "recall@10", "ndcg@10", "users")},
          "epochs": m.get("epochs_run"), "stopped": m.get("stopped")}))
PY
      tail -n 16 $R.log ) &
  done
done
wait
cp $RUNS/*.log "$OUT/" 2>/dev/null
true
