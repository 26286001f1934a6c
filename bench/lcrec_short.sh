#!/usr/bin/env bash
# One device call, when a session has minutes left: join the GGUF (part-aa staged by the previous call), train
# LETTER-LC-Rec on SmolLM2-135M (LoRA) for EPOCHS epochs, both seeds side by side, decode the test users, and
# time the batched trie beam search against HF generate; rows and logs into $OUT. A short-budget figure.
#   bash bench/stage_device.sh .gpu/carry3      (call 1)
#   bash bench/stage_device.sh .gpu/h2b && bash bench/lcrec_short.sh     (call 2, carry .gpu/h2b)
set -u
cd "${W:-/tmp/w}"
. bench/device_env.sh
OUT_ROWS=$OUT
bash bench/lcrec_gpu.sh join || exit 1
G=/tmp/llm/SmolLM2-135M-Instruct.Q4_1.gguf
(OUT=$OUT_ROWS MINUTES=${MINUTES:-6} EPOCHS=${EPOCHS:-1} BATCH=128 EXTRA="--accumulate 2" TAU_OVERRIDE=0.7 \
  GENERATOR=lcrec LCREC_MODEL=$G SEEDS="0 1" bash bench/reproduce.sh beauty published seq-only-short) &
python3 bench/lcrec_decoding.py --model $G --users 512 --batch 256 --hf-users 16 --device cuda \
  --json "$OUT_ROWS/lcrec-decoding-smollm2-h200.json" > "$OUT_ROWS/lcrec-decoding.log" 2>&1 &
wait
cp /tmp/repro/*.log "$OUT_ROWS/" 2>/dev/null
for r in /tmp/repro/*/; do [ -f "$r/metrics.json" ] && cp "$r/metrics.json" "$OUT_ROWS/$(basename "$r").metrics.json"; done
ls -la "$OUT_ROWS"
