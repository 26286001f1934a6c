#!/usr/bin/env bash
# Issue 10 on one GPU: the old-vs-new step benchmark (alone on the card), then the equal-budget
# quality runs (Beauty, LETTER's released IDs, 35 epochs, batch 1024; seeds in parallel).
# Inputs travel in .gpu/ (carry it): .gpu/data/beauty (sidrec data prepare letter ...) and
# .gpu/tok/beauty-pub (sidrec tokenize ... --method published). Results land in $OUT.
#   device run: MODE=speed bash bench/fast_trainer.sh  (BATCHES="1024 4096" SPEED_ARGS=--skip-attn-dropout: shorter)
#                   MODE=quality SEEDS="0 1" bash bench/fast_trainer.sh
set -u
OUT=${OUT:-bench/out/fast}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
D=.gpu/data/beauty; T=.gpu/tok/beauty-published
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null | tee "$OUT/gpu.txt"
case "${MODE:-speed}" in
speed)
  python3 bench/train_speed.py --data $D --tokens $T --batch ${BATCHES:-256 1024 4096} ${SPEED_ARGS:---epoch} \
    --json "$OUT/train-speed-h100.json" 2>&1 | grep -v "^USDT" | tee "$OUT/train-speed.log" ;;
quality)
  for s in ${SEEDS:-0}; do
    python3 -m sidrec train tiger $D --tokens $T --out /tmp/q-$s --epochs ${EPOCHS:-35} --batch-size 1024 \
      --eval-every 1 --patience 1000 --valid-users 4096 --decode-batch 512 --seed $s ${EXTRA:-} \
      > "$OUT/quality-seed$s.log" 2>&1 &
  done
  wait
  for s in ${SEEDS:-0}; do cp /tmp/q-$s/metrics.json "$OUT/quality-seed$s.metrics.json"; cp /tmp/q-$s/log.jsonl "$OUT/quality-seed$s.log.jsonl"; done
  tail -n 4 "$OUT"/quality-seed*.log ;;
esac
