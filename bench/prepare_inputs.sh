#!/usr/bin/env bash
# CPU-side inputs of the reproduction runs (issue 11), into .gpu/ (carried to the device, not committed):
# prepared datasets, MiniLM item embeddings, LETTER's released IDs. Tokenizers and CF runs are made on
# the device (bench/make_tokens.sh). Idempotent: existing outputs are kept.
#   bash bench/prepare_inputs.sh            (D=../shared/data)
set -eu
D=${D:-../shared/data}
prep() {  # name, source, inputs...
  [ -f .gpu/data/$1/stats.json ] || sidrec data prepare $2 "${@:3}" --out .gpu/data/$1 > /dev/null
  [ -f .gpu/emb/$1-minilm/item_emb.npy ] || sidrec embed .gpu/data/$1 --encoder minilm --out .gpu/emb/$1-minilm > /dev/null
  echo "$1: $(python3 -c "import json; s=json.load(open('.gpu/data/$1/stats.json')); print(s['users'], 'users', s['items'], 'items', s['interactions'], 'interactions')")"
}
prep beauty letter --input $D/amazon2014-beauty/letter-format/Beauty.inter.json.gz \
  --input $D/amazon2014-beauty/transrec-format/Beauty.item.json.gz
prep toys s3rec --input $D/amazon2014-toys/s3rec-format/Toys_and_Games.txt.gz \
  --input $D/amazon2014-toys/transrec-format/Toys_and_Games.item.json.gz
prep yelp letter --input $D/yelp/letter-format/Yelp.inter.json.gz --input $D/yelp/letter-format/Yelp.item.json.gz
prep scientific letter --input $D/amazon2018-scientific/lcrec-format/Scientific.inter.json.gz \
  --input $D/amazon2018-scientific/lcrec-format/Scientific.item.json.gz
# Instruments: interactions and released IDs only (no item text here): the released-ID row
[ -f .gpu/data/instruments/stats.json ] || sidrec data prepare letter \
  --input $D/amazon2018-instruments/letter-format/Instruments.inter.json.gz --out .gpu/data/instruments > /dev/null
for x in beauty:amazon2014-beauty/letter-format/Beauty yelp:yelp/letter-format/Yelp \
         instruments:amazon2018-instruments/letter-format/Instruments; do
  n=${x%%:*}; [ -f .gpu/tok/$n-published/codes.npy ] || sidrec tokenize .gpu/data/$n --method published \
    --index $D/${x#*:}.index.json.gz --out .gpu/tok/$n-published > /dev/null
done
du -sh .gpu
