#!/usr/bin/env bash
# Issue 11 inputs on the device: the CF run and every token set of one dataset, in $TOKDIR (default
# /tmp/tok, kept on a warm machine; carried .gpu/ paths are replaced on every call, so nothing is
# written there). Needs .gpu/data/DATASET (sidrec data prepare) and .gpu/emb/DATASET-minilm (sidrec embed,
# CPU is fine). Makes: CF = SASRec dim 32 ($TOKDIR/DATASET-cf), DATASET-rqvae, DATASET-letter,
# DATASET-letter-cf-only (diversity weight 0), DATASET-letter-div-only (CF weight 0; trains only with the letter
# preset's learning-rate warm-up, without which LETTER's deep encoder died: one code per level), DATASET-letter-cf0.2 (CF weight 0.2:
# stronger against the standardised reconstruction; the letter preset's default since session 10); existing ones
# are kept.
#   bash bench/make_tokens.sh beauty        then   TOKDIR=/tmp/tok bash bench/reproduce.sh beauty letter full
set -eu
DATASET=$1; TOKDIR=${TOKDIR:-/tmp/tok}; mkdir -p "$TOKDIR"
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
D=.gpu/data/$DATASET; E=.gpu/emb/$DATASET-minilm; CF=$TOKDIR/$DATASET-cf
if [ -f ".gpu/$DATASET-cf/item_emb.npy" ]; then CF=.gpu/$DATASET-cf  # a CF run carried from this machine
elif [ ! -f "$CF/item_emb.npy" ]; then
  python3 -m sidrec train sasrec $D --dim 32 --out $CF --seed 0 > $TOKDIR/$DATASET-cf.log 2>&1
fi
tok() {  # name, method, extra options
  [ -f "$TOKDIR/$DATASET-$1/codes.npy" ] && return 0
  python3 -m sidrec tokenize $D --method $2 --embeddings $E --out $TOKDIR/$DATASET-$1 --seed 0 "${@:3}" \
    > $TOKDIR/$DATASET-$1.log 2>&1 && tail -n 14 $TOKDIR/$DATASET-$1.log
}
tok rqvae rqvae &
tok letter letter --cf $CF --set cf_weight=0.02 &  # the paper's weights (the preset's CF weight is 0.2 since session 10)
tok letter-cf-only letter --cf $CF --set cf_weight=0.02 --set div_weight=0 &
tok letter-div-only letter --cf $CF --set cf_weight=0 &  # needs the preset's warm-up (session 10): it collapsed without
tok letter-cf0.2 letter --cf $CF --set cf_weight=0.2 &
wait
[ -d .gpu/tok/$DATASET-published ] && [ ! -d $TOKDIR/$DATASET-published ] && cp -r .gpu/tok/$DATASET-published $TOKDIR/
ls $TOKDIR
