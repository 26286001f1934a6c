# Sourced by the device-side scripts that run in the work tree /tmp/w (bench/start_queue.sh, bench/lcrec_short.sh):
# sidrec from the tree plus the carried wheels (/tmp/site2), runs in /tmp/repro, token sets in .gpu/tok, and an
# allocator that lets many jobs share a card.
export PYTHONPATH=$PWD/src:/tmp/site2 PYTHONUNBUFFERED=1 RUNS=/tmp/repro TOKDIR=.gpu/tok
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
