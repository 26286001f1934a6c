#!/usr/bin/env bash
# VQ-Rec on real data in one command (issue 6), same code as on CPU:
#   pre-train on Office + Industrial (MiniOneRec valid/test rows, prepared with --min-count 3) + Yelp,
#   fine-tune on Amazon 2018 Scientific and on Online Retail (40k-row sample), with the paper's ablations
#   (no pre-training, no semi-synthetic negative, no permutation stage, random codes) and SASRec on each
#   target alone. MiniLM embeddings computed beforehand (bench/README.md says how); inputs travel in .gpu/vq.
#   device run: bash bench/vqrec_gpu.sh          (carry: .gpu/vq)
#   CPU smoke test at a tiny budget: TINY=1 OUT=/tmp/o bash bench/vqrec_gpu.sh
set -u
OUT=${OUT:-bench/out/vqrec}; mkdir -p "$OUT"
W=${WORK:-/tmp/sidrec-vq}; rm -rf "$W"; mkdir -p "$W/logs"
V=.gpu/vq
if ! python3 -c "import faiss" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $V/whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
S="python3 -m sidrec"
PRE=${PRE_MIN:-3}; FT=${FT_MIN:-1.2}; EP=${EPOCHS:-300}; OPQIT=${OPQ_ITERS:-20}; SEED=${SEED:-0}
if [ "${TINY:-0}" = 1 ]; then PRE=0.05; FT=0.02; EP=1; OPQIT=1; fi
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null | tee "$OUT/gpu.txt"
t0=$(date +%s)
( sleep ${DEADLINE:-540}; pkill -f "sidrec train" ) &
WATCH=$!
pretrain() {  # name [options]
  local name=$1; shift
  OMP_NUM_THREADS=${PRE_THREADS:-6} $S train vqrec --pretrain $V/data/office --pretrain $V/data/industrial --pretrain $V/data/yelp \
    --embeddings $V/emb/office-minilm --embeddings $V/emb/industrial-minilm --embeddings $V/emb/yelp-minilm \
    --out $W/$name --epochs $EP --max-minutes $PRE --patience 10 --seed $SEED --set opq_iters=$OPQIT "$@" > $W/logs/$name.log 2>&1
}
finetune() {  # target name [options]
  local t=$1 name=$2; shift 2
  OMP_NUM_THREADS=2 $S train vqrec $V/data/$t --embeddings $V/emb/$t-minilm --tokens $W/tok-opq-$t --out $W/$name --epochs $EP --max-minutes $FT \
    --patience 10 --seed $SEED --ks 5,10,20,50 "$@" > $W/logs/$name.log 2>&1
}
pretrain vq-pre &
[ "${ABLATIONS:-1}" = 1 ] && pretrain vq-pre-rho0 --rho 0 &
for t in sci retail; do  # one OPQ per target, fitted on its training items, shared by its fine-tuning runs
  OMP_NUM_THREADS=2 $S tokenize $V/data/$t --method opq --embeddings $V/emb/$t-minilm --out $W/tok-opq-$t \
    --set opq_iters=$OPQIT > $W/logs/tok-opq-$t.log 2>&1
done
for t in sci retail; do
  OMP_NUM_THREADS=2 $S train sasrec $V/data/$t --out $W/sasrec-$t --dropout 0.5 --seed $SEED --epochs $EP --max-minutes $FT > $W/logs/sasrec-$t.log 2>&1 &
  finetune $t vq-$t-nopre &
done
while pgrep -f "\-\-pretrain" >/dev/null; do sleep 3; done
echo "pre-training done after $(( $(date +%s) - t0 )) s"
for t in sci retail; do
  finetune $t vq-$t --init $W/vq-pre &
  finetune $t vq-$t-all --init $W/vq-pre --finetune all &  # stage 2 trains everything, not only the tables
  if [ "${ABLATIONS:-1}" = 1 ]; then
    finetune $t vq-$t-norho --init $W/vq-pre-rho0 &
    finetune $t vq-$t-noperm --init $W/vq-pre --no-permutation &
    finetune $t vq-$t-random --init $W/vq-pre --codes random &
  fi
done
while [ $(jobs -rp | wc -l) -gt 1 ]; do sleep 3; done
kill $WATCH 2>/dev/null
echo "all runs done in $(( $(date +%s) - t0 )) s"
python3 bench/summarize.py "$W" > "$OUT/summary.md"
cat "$OUT/summary.md"
for f in $W/logs/*.log; do echo "== $f"; grep -v WARNING "$f" | tail -4; done > "$OUT/logs_tail.txt"
tar czf "$OUT/runs.tar.gz" -C "$W" --exclude='*.safetensors' --exclude='checkpoint.pt' --exclude='*.npy' \
  --exclude='*.faiss' --exclude='*.pkl' .
