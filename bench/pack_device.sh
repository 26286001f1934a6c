#!/usr/bin/env bash
# Pack the inputs of one device call into a carry folder (here, on the CPU): a device call carries at most 64 MiB,
# so the inputs of a session travel over several calls, one folder each. Embeddings travel as float16 (sidrec
# reads them back as float32); everything else is copied. Paths are relative to .gpu/ and two levels deep
# (data/NAME, emb/NAME, tok/NAME, llm/PART) or `whl` (the wheels the device image lacks). Token sets travel
# slim (no model.safetensors, no z_hat.npy).
#   bash bench/pack_device.sh .gpu/carry1 whl data/toys emb/toys-minilm tok/toys-cf
# On the device: `bash bench/stage_device.sh .gpu/carry1` (see there).
set -eu
OUT=$1; shift; rm -rf "$OUT"; mkdir -p "$OUT"
for p in "$@"; do
  src=.gpu/$p
  [ -e "$src" ] || { echo "pack_device: $src is missing (bash bench/prepare_inputs.sh makes data/ and emb/)" >&2; exit 2; }
  mkdir -p "$OUT/$(dirname "$p")"
  case "$p" in
    emb/*) mkdir -p "$OUT/$p"
           python3 -c "import numpy as np, sys; np.save(sys.argv[2], np.load(sys.argv[1]).astype(np.float16))" \
             "$src/item_emb.npy" "$OUT/$p/item_emb.npy"
           [ -f "$src/embeddings.json" ] && cp "$src/embeddings.json" "$OUT/$p/" ;;
    tok/*) cp -r "$src" "$OUT/$p"  # slim: the generator reads codes and tokenizer.json, not the fitted weights
           rm -f "$OUT/$p/model.safetensors" "$OUT/$p/z_hat.npy" ;;
    *) cp -r "$src" "$OUT/$p" ;;
  esac
done
size=$(du -sb "$OUT" | cut -f1)
echo "$OUT: $((size / 1048576)) MiB"
if [ "$size" -gt $((62 * 1048576)) ]; then echo "pack_device: $OUT is over 62 MiB; split it over two calls" >&2; exit 2; fi
