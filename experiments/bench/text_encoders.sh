#!/usr/bin/env bash
# tf-idf vs MiniLM item embeddings under the same RQ-VAE (Scientific, CPU): code usage, collisions,
# reconstruction, CF overlap and LETTER's ranking check (SASRec 32-d with quantized item vectors).
#   bash experiments/bench/text_encoders.sh DATA [WORK]   (DATA: the data root of experiments/README.md; WORK default
#   /tmp/sidrec-enc; ~8 minutes on a 2-core x86 CPU)
set -eu
D=$1/amazon2018-scientific/lcrec-format; W=${2:-/tmp/sidrec-enc}; mkdir -p $W
[ -d $W/sci ] || sidrec data prepare letter --input $D/Scientific.inter.json.gz --input $D/Scientific.item.json.gz --out $W/sci
[ -f $W/sas32/metrics.json ] || sidrec train sasrec $W/sci --out $W/sas32 --dim 32 --dropout 0.5 --max-minutes 3
for enc in tfidf minilm; do
  sidrec embed $W/sci --encoder $enc --out $W/emb-$enc
  sidrec tokenize $W/sci --method rqvae --embeddings $W/emb-$enc --cf $W/sas32 --out $W/tok-$enc --epochs 800
done
python3 - "$W" <<'PY'
import json, sys
w = sys.argv[1]
print("| encoder | used per level | collisions before | recon MSE | CF overlap | ranking check R@10 | fit s |")
print("|---|---|---|---|---|---|---|")
for enc in ("tfidf", "minilm"):
    r = json.load(open(f"{w}/tok-{enc}/report.json"))
    rc = (r.get("ranking_check") or {}).get("recall@10")
    print(f"| {enc} | {r['usage_per_level']} | {r['collision_rate_before']:.4f} | {r['reconstruction_mse']:.6f} | "
          f"{r['cf_overlap']:.4f} | {rc} | {r.get('fit_seconds')} |")
PY
