#!/usr/bin/env bash
# Issue 16: 1 vs N GPUs with torchrun, same global batch, on a multi-GPU kind (nvidia-h100-x2 or larger).
#   bash bench/multigpu.sh [N]      (carry .gpu/data/beauty and .gpu/tok/beauty-published)
# GPUS="1" or GPUS="2" runs one side only (e.g. the 1-GPU runs pinned with CUDA_VISIBLE_DEVICES while the
# other card does other work, the N-GPU runs in a later call on a warm machine); TRAINERS picks the trainers.
# TIGER on LETTER's Beauty IDs (--preset letter, batch 1024, 200 epochs, patience 20; MINUTES caps each run)
# and SASRec on Beauty, each once on 1 GPU and once on N; one row per run in $OUT/multigpu.jsonl:
# {trainer, gpus, samples_per_second, best_epoch, seconds_to_best, recall@10, ndcg@10, command}. Keep the
# machine's NCCL_NVLS_ENABLE=0 and multicast variables as they are. Scaling efficiency = speed-up / N.
set -u
N=${1:-2}; OUT=${OUT:-bench/out/multigpu}; RUNS=${RUNS:-/tmp/multigpu}; mkdir -p "$OUT" "$RUNS"
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
D=.gpu/data/beauty; T=.gpu/tok/beauty-published
row() {  # trainer gpus run command
  python3 - "$@" <<'PY' >> "$OUT/multigpu.jsonl"
import json, sys
trainer, gpus, run, cmd = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
m = json.load(open(f"{run}/metrics.json"))
log = [json.loads(x) for x in open(f"{run}/log.jsonl")]
best = m["best_epoch"]
print(json.dumps({"trainer": trainer, "gpus": gpus, "samples_per_second": m.get("samples_per_second"),
                  "seconds_per_epoch": m.get("seconds_per_epoch"),
                  "best_epoch": best, "epochs": m["epochs_run"], "stopped": m.get("stopped"),
                  "seconds_to_best": round(sum(r["seconds"] + r.get("validate_seconds", 0) for r in log[:best]), 1),
                  "recall@10": m["test"]["recall@10"], "ndcg@10": m["test"]["ndcg@10"], "command": cmd}))
PY
}
has() { case " ${TRAINERS:-tiger sasrec} " in *" $1 "*) return 0 ;; esac; return 1; }
for G in ${GPUS:-1 $N}; do
  L="python3 -m sidrec"; [ $G -gt 1 ] && L="torchrun --standalone --nproc_per_node $G -m sidrec"
  if has tiger; then
    C="$L train tiger $D --tokens $T --preset letter --temperature 0.7 --max-minutes ${MINUTES:-8} --seed 0 --out $RUNS/tiger-$G"
    $C > $RUNS/tiger-$G.log 2>&1 && row tiger $G $RUNS/tiger-$G "$C"
  fi
  if has sasrec; then
    C="$L train sasrec $D --seed 0 --out $RUNS/sasrec-$G"
    $C > $RUNS/sasrec-$G.log 2>&1 && row sasrec $G $RUNS/sasrec-$G "$C"
  fi
done
cat "$OUT/multigpu.jsonl"
