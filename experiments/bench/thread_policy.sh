#!/usr/bin/env bash
# CPU thread policy: one TIGER run alone vs two at once, with torch's old default (every
# core per process: OMP_NUM_THREADS=<cores>) and with sidrec's policy (no setting). Per-epoch seconds.
#   bash experiments/bench/thread_policy.sh DATA TOKENS [WORK]   (e.g. a demo run's data/ and tokens/; WORK default
#   /tmp/sidrec-threads)
set -u
D=$1; T=$2; W=${3:-/tmp/sidrec-threads}; rm -rf $W; mkdir -p $W
C=$(nproc)
run() { sidrec train tiger $D --tokens $T --preset small --epochs 3 --eval-every 100 --patience 100 --out $W/$1 --device cpu > $W/$1.log 2>&1; }
epoch_s() { python3 -c "import json,sys; r=[json.loads(l) for l in open('$W/$1/log.jsonl')]; print(round(sum(x['seconds'] for x in r[1:])/len(r[1:]),2))"; }
OMP_NUM_THREADS=$C run alone-old; echo "alone, $C threads: $(epoch_s alone-old) s/epoch"
run alone-new; echo "alone, policy: $(epoch_s alone-new) s/epoch"
(OMP_NUM_THREADS=$C run two-old-a &); OMP_NUM_THREADS=$C run two-old-b; sleep 2; while pgrep -f "two-old-a" >/dev/null; do sleep 1; done
echo "two at once, $C threads each: $(epoch_s two-old-a) / $(epoch_s two-old-b) s/epoch"
(run two-new-a &); sleep 1; run two-new-b; while pgrep -f "two-new-a" >/dev/null; do sleep 1; done
echo "two at once, policy: $(epoch_s two-new-a) / $(epoch_s two-new-b) s/epoch"
