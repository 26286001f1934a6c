#!/usr/bin/env bash
# 1 vs N GPUs with torchrun, same global batch, on a machine with N GPUs.
#   bash experiments/bench/multi_gpu_scaling.sh [--gpus N] [--sides "1 N"] [--trainers "tiger sasrec"] \
#        [--minutes 8] [--data data/beauty] [--tokens runs/beauty-released-ids] [--out experiments/results] [--runs DIR]
# (a prepared Beauty and LETTER's released IDs: `sidrec tokenize --method published`). --sides "1" or "2" runs one
# side only (e.g. the 1-GPU runs pinned with CUDA_VISIBLE_DEVICES while the other cards do other work).
# TIGER on LETTER's Beauty IDs (--preset letter, batch 1024, 200 epochs, patience 20; --minutes caps each run)
# and SASRec on Beauty, each once on 1 GPU and once on N; one row per run in OUT/bench-multi-gpu.jsonl:
# {bench, variant, trainer, gpus, samples_per_second, best_epoch, seconds_to_best, recall@10, ndcg@10, gpu,
# command}. Scaling efficiency = speed-up / N.
set -u
N=2; SIDES=; TRAINERS="tiger sasrec"; MINUTES=8; D=data/beauty; T=runs/beauty-released-ids
OUT=experiments/results; RUNS=/tmp/multigpu
while [ $# -gt 0 ]; do
  case "$1" in
    --gpus) N=$2 ;; --sides) SIDES=$2 ;; --trainers) TRAINERS=$2 ;; --minutes) MINUTES=$2 ;;
    --data) D=$2 ;; --tokens) T=$2 ;; --out) OUT=$2 ;; --runs) RUNS=$2 ;;
    *) echo "multi_gpu_scaling.sh: unknown option $1" >&2; exit 2 ;;
  esac; shift 2
done
mkdir -p "$OUT" "$RUNS"
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
row() {  # trainer gpus run command
  python3 - "$@" <<'PY' >> "$OUT/bench-multi-gpu.jsonl"
import json, sys
import torch
trainer, gpus, run, cmd = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
m = json.load(open(f"{run}/metrics.json"))
log = [json.loads(x) for x in open(f"{run}/log.jsonl")]
best = m["best_epoch"]
print(json.dumps({"bench": "multi-gpu", "variant": f"{trainer}, {gpus} GPU(s)", "trainer": trainer, "gpus": gpus, "samples_per_second": m.get("samples_per_second"),
                  "seconds_per_epoch": m.get("seconds_per_epoch"),
                  "best_epoch": best, "epochs": m["epochs_run"], "stopped": m.get("stopped"),
                  "seconds_to_best": round(sum(r["seconds"] + r.get("validate_seconds", 0) for r in log[:best]), 1),
                  "recall@10": m["test"]["recall@10"], "ndcg@10": m["test"]["ndcg@10"],
                  "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "command": cmd}))
PY
}
has() { case " $TRAINERS " in *" $1 "*) return 0 ;; esac; return 1; }
for G in ${SIDES:-1 $N}; do
  L="python3 -m sidrec"; [ $G -gt 1 ] && L="torchrun --standalone --nproc_per_node $G -m sidrec"
  if has tiger; then
    C="$L train tiger $D --tokens $T --preset letter --temperature 0.7 --max-minutes $MINUTES --seed 0 --out $RUNS/tiger-$G"
    $C > $RUNS/tiger-$G.log 2>&1 && row tiger $G $RUNS/tiger-$G "$C"
  fi
  if has sasrec; then
    C="$L train sasrec $D --seed 0 --out $RUNS/sasrec-$G"
    $C > $RUNS/sasrec-$G.log 2>&1 && row sasrec $G $RUNS/sasrec-$G "$C"
  fi
done
tail -n 4 "$OUT/bench-multi-gpu.jsonl"
