#!/usr/bin/env bash
# LETTER: how often to re-cluster the codebooks (constrained k-means) — cost vs quality (Scientific, CPU).
# The official code re-clusters every epoch; we default to every 10. Runs after bench/text_encoders.sh
# (reuses its prepared data, tf-idf embeddings and 32-d SASRec).
#   bash bench/letter_recluster.sh
set -eu
W=${WORK:-/tmp/sidrec-enc}; EP=${EPOCHS:-300}
for e in ${EVERY:-1 10 50}; do
  sidrec tokenize $W/sci --method letter --embeddings $W/emb-tfidf --cf $W/sas32 --out $W/letter-e$e --epochs $EP \
    --set recluster_every=$e > $W/letter-e$e.log 2>&1
done
python3 - "$W" ${EVERY:-1 10 50} <<'PY'
import json, sys
w, every = sys.argv[1], sys.argv[2:]
print("| re-cluster every | fit s | of which re-clustering s | usage per level | collisions before | CF overlap | ranking check R@10 |")
print("|---|---|---|---|---|---|---|")
for e in every:
    r = json.load(open(f"{w}/letter-e{e}/report.json"))
    rc = (r.get("ranking_check") or {}).get("recall@10")
    print(f"| {e} | {r.get('fit_seconds')} | {r.get('recluster_seconds')} | {r['usage_per_level']} | "
          f"{r['collision_rate_before']:.4f} | {r['cf_overlap']:.4f} | {rc if rc is None else round(rc, 4)} |")
PY
