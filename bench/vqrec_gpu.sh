#!/usr/bin/env bash
# VQ-Rec on real data in one command (issue 6), same code as on CPU:
#   pre-train on the domains of MIX (default "beauty toys": Amazon 2014 Beauty + Toys, item title + categories;
#   the first mix, issue 6, was "office industrial yelp": MiniOneRec valid/test rows with --min-count 3 + Yelp),
#   fine-tune on Amazon 2018 Scientific and on Online Retail (40k-row sample), with the paper's ablations
#   (no pre-training, no semi-synthetic negative, no permutation stage, random codes) and SASRec on each
#   target alone. MiniLM embeddings computed beforehand (bench/prepare_inputs.sh, VQ_DOMAINS for more domains); inputs
#   travel in .gpu/vq. Rows {target, pretrain, variant, seed, recall@10, ...} land in $OUT/vqrec.jsonl.
#   device run: bash bench/vqrec_gpu.sh          (carry: .gpu/vq)
#   NOTWINS=1 adds the variants without twin vectors (the default since session 10 has them); COLD=1 adds the
#   Scientific cold-start runs (evaluate-coldstart --model vqrec, with and without --init), rows in $OUT/coldstart-vqrec.jsonl
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
  OMP_NUM_THREADS=${PRE_THREADS:-6} $S train vqrec $PRE_ARGS --out $W/$name --epochs $EP --max-minutes $PRE --patience 10 --seed $SEED --set opq_iters=$OPQIT "$@" > $W/logs/$name.log 2>&1
}
finetune() {  # target name [options]
  local t=$1 name=$2; shift 2
  OMP_NUM_THREADS=2 $S train vqrec $V/data/$t --embeddings $V/emb/$t-minilm --tokens $W/tok-opq-$t --out $W/$name --epochs $EP --max-minutes $FT \
    --patience 10 --seed $SEED --ks 5,10,20,50 "$@" > $W/logs/$name.log 2>&1
}
MIX=${MIX:-beauty toys}; PRE_ARGS=""
for m in $MIX; do PRE_ARGS="$PRE_ARGS --pretrain $V/data/$m --embeddings $V/emb/$m-minilm"; done
pretrain vq-pre &
[ "${ABLATIONS:-1}" = 1 ] && pretrain vq-pre-rho0 --rho 0 &
for t in sci retail; do  # one OPQ per target, fitted on its training items, shared by its fine-tuning runs
  OMP_NUM_THREADS=2 $S tokenize $V/data/$t --method opq --embeddings $V/emb/$t-minilm --out $W/tok-opq-$t \
    --set opq_iters=$OPQIT > $W/logs/tok-opq-$t.log 2>&1
done
for t in sci retail; do
  OMP_NUM_THREADS=2 $S train sasrec $V/data/$t --out $W/sasrec-$t --dropout 0.5 --seed $SEED --epochs $EP --max-minutes $FT > $W/logs/sasrec-$t.log 2>&1 &
  finetune $t vq-$t-nopre &
  [ "${NOTWINS:-0}" = 1 ] && finetune $t vq-$t-nopre-notwins --set twin_vectors=false &  # the same without pre-training
done
if [ "${COLD:-0}" = 1 ]; then  # issue 17 item 3: Scientific cold start (TIGER's protocol), trained on the seen items alone
  OMP_NUM_THREADS=2 $S evaluate-coldstart $V/data/sci --model vqrec --embeddings $V/emb/sci-minilm --out $W/cold-sci-nopre \
    --seed $SEED --set opq_iters=$OPQIT --set max_minutes=$FT --epsilon 0.1 --epsilon 0.2 --epsilon 0.3 --epsilon 0.5 \
    > $W/logs/cold-sci-nopre.log 2>&1 &
fi
while pgrep -f "\-\-pretrain" >/dev/null; do sleep 3; done
echo "pre-training done after $(( $(date +%s) - t0 )) s"
for t in sci retail; do
  finetune $t vq-$t --init $W/vq-pre &
  [ "${ALL:-0}" = 1 ] && finetune $t vq-$t-all --init $W/vq-pre --finetune all &  # stage 2 trains everything
  [ "${NOTWINS:-0}" = 1 ] && finetune $t vq-$t-notwins --init $W/vq-pre --set twin_vectors=false &  # code twins tie
  if [ "${ABLATIONS:-1}" = 1 ]; then
    finetune $t vq-$t-norho --init $W/vq-pre-rho0 &
    finetune $t vq-$t-noperm --init $W/vq-pre --no-permutation &
    finetune $t vq-$t-random --init $W/vq-pre --codes random &
  fi
  if [ "${COLD:-0}" = 1 ] && [ $t = sci ]; then  # ... and fine-tuned from the pre-trained run
    OMP_NUM_THREADS=2 $S evaluate-coldstart $V/data/sci --model vqrec --init $W/vq-pre --embeddings $V/emb/sci-minilm \
      --out $W/cold-sci --seed $SEED --set opq_iters=$OPQIT --set max_minutes=$FT --epsilon 0.1 --epsilon 0.2 \
      --epsilon 0.3 --epsilon 0.5 > $W/logs/cold-sci.log 2>&1 &
  fi
done
while [ $(jobs -rp | wc -l) -gt 1 ]; do sleep 3; done
kill $WATCH 2>/dev/null
echo "all runs done in $(( $(date +%s) - t0 )) s"
python3 bench/summarize.py "$W" > "$OUT/summary.md"
python3 - "$W" "$MIX" "$SEED" "MIX='$MIX' SEED=$SEED PRE_MIN=$PRE FT_MIN=$FT bash bench/vqrec_gpu.sh" "$OUT" >> "$OUT/vqrec.jsonl" <<'PY'
import json, sys
from pathlib import Path
w, mix, seed, cmd = Path(sys.argv[1]), sys.argv[2].replace(" ", "+"), int(sys.argv[3]), sys.argv[4]
pre = json.loads((w / "vq-pre" / "metrics.json").read_text()) if (w / "vq-pre" / "metrics.json").is_file() else {}
names = {"": "full", "-nopre": "no-pretraining", "-norho": "no-semi-synthetic", "-noperm": "no-permutation",
         "-random": "random-codes", "-all": "finetune-all", "-notwins": "no-twin-vectors",
         "-nopre-notwins": "no-pretraining-no-twin-vectors"}
for t, target in (("sci", "scientific"), ("retail", "online-retail")):
    runs = {f"vq-{t}{k}": v for k, v in names.items()} | {f"sasrec-{t}": "sasrec"}
    for name, variant in runs.items():
        f = w / name / "metrics.json"
        if not f.is_file():
            continue
        m = json.loads(f.read_text()); te = m.get("test", {})
        uses_pre = variant not in ("no-pretraining", "no-pretraining-no-twin-vectors", "sasrec")
        print(json.dumps({"target": target, "pretrain": mix if uses_pre else None, "variant": variant, "seed": seed,
                          **{k: te.get(k) for k in ("recall@10", "ndcg@10", "recall@50", "ndcg@50")},
                          "pretrain_minutes": round(pre.get("train_seconds", 0) / 60, 2) if uses_pre else 0,
                          "pretrain_epochs": pre.get("epochs_run") if uses_pre else None,
                          "pretrain_stopped": pre.get("stopped") if uses_pre else None,
                          "finetune_minutes": round(m.get("train_seconds", 0) / 60, 2), "command": cmd,
                          **({} if variant == "sasrec" else {"twin_vectors": "no-twin-vectors" not in variant})}))
cold = open(Path(sys.argv[5]) / "coldstart-vqrec.jsonl", "a")
for c in ("cold-sci", "cold-sci-nopre"):  # cold-start rows (model vqrec / knn), as in bench/results/coldstart.json
    if not (w / c / "coldstart.json").is_file():
        continue
    for r in json.loads((w / c / "coldstart.json").read_text())["rows"]:
        print(json.dumps({"dataset": "scientific", "seed": seed, "pretrain": mix if c == "cold-sci" else None,
                          **{k: r.get(k) for k in ("epsilon", "model", "slots", "rule", "levels", "tau", "recall@10", "ndcg@10", "users")},
                          "command": cmd + " COLD=1"}), file=cold)
PY
cat "$OUT/summary.md"
for f in $W/logs/*.log; do echo "== $f"; grep -v WARNING "$f" | tail -4; done > "$OUT/logs_tail.txt"
tar czf "$OUT/runs.tar.gz" -C "$W" --exclude='*.safetensors' --exclude='checkpoint.pt' --exclude='*.npy' \
  --exclude='*.faiss' --exclude='*.pkl' .
