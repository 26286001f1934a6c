#!/usr/bin/env bash
# Issue 11: one table row at the paper's protocol and budget, seeds side by side on one card.
#   bash bench/reproduce.sh DATASET TOKENS [VARIANT]      e.g.  bench/reproduce.sh beauty letter full
# Protocol: leave-one-out, full ranking over all items, all test users, beam 20; TIGER's shape (4+4 layers,
# d_model 128) trained with LETTER-TIGER's released recipe (`--preset letter`: batch 1024, lr 5e-4, weight
# decay 0.01, warm-up 1% of the steps, cosine over 200 epochs, early stopping with patience 20 on the
# teacher-forced validation loss). PRESET=tiger gives sidrec's own recipe (lr 1e-3 at 256, sqrt rule).
# VARIANT: full (ranking-guided loss tau 0.7 for letter/published IDs; tau 1 for the others), no-rank-loss
# (tau 1), cf-only / div-only (LETTER tokenizer ablations, tokens .gpu/tok/DATASET-letter-VARIANT, tau 1),
# cf0.2 (a "beyond" row: LETTER with CF weight 0.2 instead of 0.02, tokens DATASET-letter-cf0.2, tau 0.7),
# or any name with EXTRA="--set ..." (a "beyond" row).
# GENERATOR=lcrec: the LC-Rec generator instead (`sidrec train lcrec`, LCREC_MODEL: smollm2-135m, a .gguf file,
# a local HF directory or tiny-qwen2; LoRA unless EXTRA has --full; its own recipe, not --preset).
# Inputs: .gpu/data/DATASET (sidrec data prepare), $TOKDIR/DATASET-TOKENS[-VARIANT] (sidrec tokenize, or
# bench/make_tokens.sh on the device; TOKDIR defaults to .gpu/tok).
# Runs live in $RUNS (default /tmp/repro) and resume: training ends before MINUTES (default 7.5; no epoch starts
# that would end past it; LC-Rec keeps DECODE_MIN, default 4, for its test decoding)
# and the next identical command continues; finished runs append a row to $OUT/reproduce.jsonl, which
# `python bench/reproduce_row.py --merge $OUT/reproduce.jsonl` adds to bench/results/reproduce.json.
set -u
DATASET=$1; TOKENS=$2; VARIANT=${3:-full}
OUT=${OUT:-bench/out/reproduce}; RUNS=${RUNS:-/tmp/repro}; mkdir -p "$OUT" "$RUNS"
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
D=.gpu/data/$DATASET
TOKDIR=${TOKDIR:-.gpu/tok}  # bench/make_tokens.sh writes /tmp/tok on the device
# a variant with token sets of its own (cf-only, div-only, cf0.2, full2000, ...): $TOKDIR/DATASET-TOKENS-VARIANT
case "$VARIANT" in cf-only|div-only|cf0.2) T=$TOKDIR/$DATASET-$TOKENS-$VARIANT ;; *) T=$TOKDIR/$DATASET-$TOKENS ;; esac
[ -d "$TOKDIR/$DATASET-$TOKENS-$VARIANT" ] && T=$TOKDIR/$DATASET-$TOKENS-$VARIANT
TAU=1.0
if { [ "$VARIANT" = full ] || [ "$VARIANT" = cf0.2 ]; } && { [ "$TOKENS" = letter ] || [ "$TOKENS" = published ]; }; then TAU=0.7; fi
TAU=${TAU_OVERRIDE:-$TAU}
# the text encoder behind the tokens (LETTER's released IDs: its LLaMA-7B embeddings)
if [ "$TOKENS" = published ]; then ENCODER=${ENCODER:-llama-7b (LETTER release)}; else ENCODER=${ENCODER:-minilm}; fi
GENERATOR=${GENERATOR:-tiger}
if [ "$GENERATOR" = lcrec ]; then
  # the test decoding of all users comes after training (Beauty: ~3.7 min for SmolLM2 on an H200 card of its
  # own): training gets MINUTES less DECODE_MIN, so the row lands before the queue's deadline
  TRAIN_MIN=$(awk -v m="${MINUTES:-7.5}" -v d="${DECODE_MIN:-4}" 'BEGIN { x = m - d; print (x < 1 ? 1 : x) }')
  ARGS="--tokens $T --model ${LCREC_MODEL:-smollm2-135m} --temperature $TAU --decode-batch 256 \
--max-minutes $TRAIN_MIN ${EPOCHS:+--epochs $EPOCHS} ${BATCH:+--batch-size $BATCH} ${EXTRA:-}"
  TAG=lcrec
else
  ARGS="--tokens $T --preset ${PRESET:-letter} --temperature $TAU --decode-batch 512 --max-minutes ${MINUTES:-7.5} \
${EPOCHS:+--epochs $EPOCHS} ${BATCH:+--batch-size $BATCH} ${EXTRA:-}"
  TAG=${PRESET:-letter}
fi
for s in ${SEEDS:-0 1}; do
  N=$DATASET-$TOKENS-$VARIANT-$TAG-s$s; R=$RUNS/$N
  if [ -f "$R/.row" ]; then echo "$R: already finished"; continue; fi
  echo "log: $RUNS/$N.log"  # bench/device_queue.py status shows this file's last lines
  ( mkdir -p "$R"
    python3 -m sidrec train $GENERATOR $D $ARGS --seed $s --out $R >> "$RUNS/$N.log" 2>&1
    if python3 bench/reproduce_row.py $R --dataset $DATASET --tokens $TOKENS --variant $VARIANT --encoder "$ENCODER" \
         --seed $s --command "bash bench/reproduce.sh $DATASET $TOKENS $VARIANT  (SEEDS=$s${PRESET:+ PRESET=$PRESET}${LCREC_MODEL:+ GENERATOR=lcrec LCREC_MODEL=$LCREC_MODEL}${EXTRA:+ EXTRA='$EXTRA'})" > $R/.row.tmp; then
      mv $R/.row.tmp $R/.row; cat $R/.row >> "$OUT/reproduce.jsonl"; ok=0
    else ok=1; fi
    tail -n 2 "$RUNS/$N.log"; exit $ok ) &
  PIDS="${PIDS:-} $!"
done
# the exit status says whether every seed wrote its row (a stopped-for-time run resumes; it is not a row yet)
rc=0; for p in ${PIDS:-}; do wait $p || rc=1; done
exit $rc
