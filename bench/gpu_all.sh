#!/usr/bin/env bash
# All GPU runs of the GPU issue in one command (one H100/H200, ~9 minutes), same code as on CPU.
# Inputs travel in .gpu/ (prepared datasets, MiniLM embeddings computed on CPU, wheels for
# k-means-constrained); results come back in $OUT. Budget per training run: $BUDGET_MIN minutes.
#   device run: bash bench/gpu_all.sh      (carry: .gpu)
#   CPU smoke test at a tiny budget: TINY=1 OUT=/tmp/o bash bench/gpu_all.sh
set -u
OUT=${OUT:-bench/out/gpu}; mkdir -p "$OUT"
W=${WORK:-/tmp/sidrec-gpu}; rm -rf "$W"; mkdir -p "$W/logs"
if ls .gpu/whl/*.whl >/dev/null 2>&1 && ! python3 -c "import k_means_constrained" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
S="python3 -m sidrec"
B=${BUDGET_MIN:-6.5}; EP=${EPOCHS:-30}; TOKEP=${TOKEN_EPOCHS:-3000}
if [ "${TINY:-0}" = 1 ]; then B=0.2; EP=1; TOKEP=5; fi
D=.gpu/data; E=.gpu/emb
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null | tee "$OUT/gpu.txt"
t0=$(date +%s)
# watchdog: whatever still runs after DEADLINE seconds is stopped, so the summary always comes back
( sleep ${DEADLINE:-520}; pkill -f "sidrec train" ; pkill -f "sidrec tokenize" ) &
WATCH=$!

ONLY=${ONLY:-all}  # all | pipelines (second call: text pipelines + longer TIGER on published IDs)
if [ "$ONLY" = all ]; then
# 1. SASRec on five datasets (test R@5/N@5/R@10/N@10, epochs, wall time)
for d in beauty sports toys yelp instruments; do
  $S train sasrec $D/$d --out $W/sasrec-$d --max-minutes $B --dropout 0.5 --epochs 200 > $W/logs/sasrec-$d.log 2>&1 &
done
fi
# 2. TIGER on LETTER's released IDs (Beauty, Instruments); ONLY=textpipes skips it (text pipelines alone)
[ "$ONLY" = textpipes ] || for d in beauty instruments; do
  idx=$( [ $d = beauty ] && echo Beauty || echo Instruments )
  ( $S tokenize $D/$d --method published --index .gpu/index/$idx.index.json.gz --out $W/tok-pub-$d &&
    $S train tiger $D/$d --tokens $W/tok-pub-$d --out $W/tiger-pub-$d --preset tiger --epochs $EP --eval-every 3 \
       --patience 4 --max-minutes $B --decode-batch 512 --valid-users ${VALID_USERS:-0} ) > $W/logs/tiger-pub-$d.log 2>&1 &
done
# 3. Whole pipeline with text (MiniLM): RQ-VAE -> TIGER and LETTER -> TIGER (ranking-guided loss, tau 0.7)
for d in yelp sci; do
  ( $S train sasrec $D/$d --out $W/sas32-$d --dim 32 --max-minutes 1 --dropout 0.5 &&
    $S tokenize $D/$d --method rqvae --embeddings $E/$d-minilm --cf $W/sas32-$d --out $W/tok-rqvae-$d --epochs $TOKEP &&
    $S tokenize $D/$d --method letter --embeddings $E/$d-minilm --cf $W/sas32-$d --out $W/tok-letter-$d --epochs $TOKEP &&
    { $S tokenize $D/$d --method rqkmeans --embeddings $E/$d-minilm --cf $W/sas32-$d --out $W/tok-rqkmeans-$d || true; } &&
    { $S train tiger $D/$d --tokens $W/tok-rqvae-$d --out $W/tiger-rqvae-$d --epochs $EP --eval-every 3 --patience 4 --valid-users ${VALID_USERS:-0} \
        --max-minutes ${PIPE_MIN:-3.5} --decode-batch ${DECODE_BATCH:-512} > $W/logs/tiger-rqvae-$d.log 2>&1 &
      $S train tiger $D/$d --tokens $W/tok-letter-$d --out $W/tiger-letter-$d --temperature 0.7 --epochs $EP --valid-users ${VALID_USERS:-0} \
        --eval-every 3 --patience 4 --max-minutes ${PIPE_MIN:-3.5} --decode-batch ${DECODE_BATCH:-512} \
        > $W/logs/tiger-letter-$d.log 2>&1; wait; } ) > $W/logs/pipeline-$d.log 2>&1 &
done
while [ $(jobs -rp | wc -l) -gt 1 ]; do sleep 5; done
kill $WATCH 2>/dev/null
echo "all runs done in $(( $(date +%s) - t0 )) s"
# 4. decoding speed against HF generate on the trained Beauty model
[ -d $W/tiger-pub-beauty ] && timeout ${DECODE_BENCH_S:-45} python3 bench/decoding.py --run $W/tiger-pub-beauty --users 2048 --hf-users 64 --json $W/decoding.json \
  > $W/logs/decoding.log 2>&1
python3 bench/summarize.py "$W" > "$OUT/summary.md"
cat "$OUT/summary.md"
tar czf "$OUT/runs.tar.gz" -C "$W" --exclude='*.safetensors' --exclude='checkpoint.pt' --exclude='*.npy' --exclude='*.faiss' .
