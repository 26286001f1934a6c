#!/usr/bin/env bash
# 1 vs N GPUs with torchrun, same global batch, on a machine with N GPUs.
#   bash experiments/bench/multi_gpu_scaling.sh [N]      (a prepared Beauty and LETTER's released IDs: `sidrec tokenize --method published`)
# GPUS="1" or GPUS="2" runs one side only (e.g. the 1-GPU runs pinned with CUDA_VISIBLE_DEVICES while the
# other cards do other work); TRAINERS picks the trainers; D and T name the dataset and tokens.
# TIGER on LETTER's Beauty IDs (--preset letter, batch 1024, 200 epochs, patience 20; MINUTES caps each run)
# and SASRec on Beauty, each once on 1 GPU and once on N; one row per run in $OUT/bench-multi-gpu.jsonl
# (OUT: experiments/results): {bench, variant, trainer, gpus, samples_per_second, best_epoch, seconds_to_best,
# recall@10, ndcg@10, gpu, command}. Scaling efficiency = speed-up / N.
set -u
N=${1:-2}; OUT=${OUT:-experiments/results}; RUNS=${RUNS:-/tmp/multigpu}; mkdir -p "$OUT" "$RUNS"
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
D=${D:-data/beauty}; T=${T:-runs/beauty-released-ids}
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
tail -n 4 "$OUT/bench-multi-gpu.jsonl"
