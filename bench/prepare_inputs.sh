#!/usr/bin/env bash
# CPU-side inputs of the reproduction runs (issue 11), into .gpu/ (carried to the device, not committed):
# prepared datasets, MiniLM item embeddings, LETTER's released IDs, and the token sets / CF runs committed in
# bench/inputs/tok; other tokenizers and CF runs are made on the device (bench/make_tokens.sh, the queues' jobs).
# Idempotent: existing outputs are kept.
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
# inputs fitted off the device and committed (bench/inputs/README.md): a lease starts from them instead of fitting them
for t in bench/inputs/tok/*/; do
  t=${t%/}; [ -d "$t" ] || continue; n=$(basename "$t")
  [ -e .gpu/tok/$n ] || { mkdir -p .gpu/tok; cp -r "$t" .gpu/tok/$n; echo "tok/$n: from bench/inputs"; }
done
# wheels the device image (Python 3.12) lacks: k-means-constrained and its needs for LETTER (.gpu/whl, 32 MB),
# faiss for VQ-Rec's OPQ (.gpu/whl-faiss); versions as tried on the device
dl() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$1" "${@:2}"; }
ls .gpu/whl/k_means_constrained-*.whl > /dev/null 2>&1 || dl .gpu/whl k-means-constrained==0.9.1 \
  ortools==9.15.6755 immutabledict==4.3.1 protobuf==6.33.6 absl-py==2.5.1 six==1.17.0
ls .gpu/whl-faiss/faiss_cpu-*.whl > /dev/null 2>&1 || dl .gpu/whl-faiss faiss-cpu==1.15.1
du -sh .gpu
# VQ-Rec (issue 17, bench/vqrec_gpu.sh): targets Scientific and Online Retail, pre-training domains Beauty and
# Toys (VQ_DOMAINS adds more, e.g. "office industrial yelp"), gathered in .gpu/vq with float16 embeddings (the
# loader reads them back as float32; halves what travels: the 64 MiB carry holds 4 domains + the faiss wheel)
[ -f .gpu/data/retail/stats.json ] || sidrec data prepare online-retail \
  --input $D/online-retail-sample40k/OnlineRetail_sample40k.xlsx --out .gpu/data/retail > /dev/null
[ -f .gpu/emb/retail-minilm/item_emb.npy ] || sidrec embed .gpu/data/retail --encoder minilm --out .gpu/emb/retail-minilm > /dev/null
for M in office:office-products:Office_Products industrial:industrial-and-scientific:Industrial_and_Scientific; do
  IFS=: read -r n dir f <<< "$M"; S=$D/amazon2018-minionerec-$dir
  case " ${VQ_DOMAINS:-} " in *" $n "*) ;; *) continue ;; esac
  [ -f .gpu/data/$n/stats.json ] || sidrec data prepare minionerec --input $S/valid_${f}_5_2016-10-2018-11.csv.gz \
    --input $S/test_${f}_5_2016-10-2018-11.csv.gz --input $S/$f.item.json.gz --min-count 3 --out .gpu/data/$n > /dev/null
  [ -f .gpu/emb/$n-minilm/item_emb.npy ] || sidrec embed .gpu/data/$n --encoder minilm --out .gpu/emb/$n-minilm > /dev/null
done
mkdir -p .gpu/vq/data .gpu/vq/emb .gpu/vq/whl
for n in scientific:sci retail:retail beauty:beauty toys:toys ${VQ_DOMAINS:-}; do
  src=${n%%:*}; dst=${n#*:}
  [ -d .gpu/vq/data/$dst ] || cp -r .gpu/data/$src .gpu/vq/data/$dst
  [ -f .gpu/vq/emb/$dst-minilm/item_emb.npy ] || { mkdir -p .gpu/vq/emb/$dst-minilm; python3 -c "
import numpy as np, sys; np.save(sys.argv[2], np.load(sys.argv[1]).astype(np.float16))" \
    .gpu/emb/$src-minilm/item_emb.npy .gpu/vq/emb/$dst-minilm/item_emb.npy; }
done
ls .gpu/whl-faiss/faiss_cpu-*.whl > /dev/null 2>&1 && cp -n .gpu/whl-faiss/faiss_cpu-*.whl .gpu/vq/whl/
du -sh .gpu/vq
