#!/usr/bin/env bash
# Runs that outlive a lease. A run stopped by its time budget (bench/reproduce.sh's MINUTES) keeps everything it
# needs to continue in its run folder (checkpoint.pt: weights, optimizer, scheduler, history; model.safetensors:
# the best epoch so far), and the same command resumes it, on the same machine. This script carries that state to
# the next machine: the device side packs every unfinished run of $RUNS (checkpoint.pt present, no .row yet) into
# one tar, sends it back in 15 MiB parts (a call brings back at most 8 files of 16 MiB: 7 parts + a checksum, so
# at most 105 MiB: a LoRA LC-Rec run on SmolLM2-135M is ~47 MB, 3.04M trained parameters with their Adam moments
# and best weights; anything larger is refused before it is sent), this side keeps the parts, and
# the next lease carries them (bench/pack_device.sh state/PART; bench/stage_device.sh moves them to /tmp/state)
# and restores the runs into $RUNS before the queue starts them again with the same commands.
#   bash bench/run_state.sh save [RUN...]   device, in the last call of a lease: parts + state.sha256 into $OUT
#                                           (RUN: names in $RUNS; a cold-start folder, RUNS=/tmp/cold, holds its
#                                           run one level down: name it, with EXCLUDE="emb data" for what
#                                           its rerun rewrites anyway; one folder per call if
#                                           two do not fit)
#   bash bench/run_state.sh keep DIR [DEST] here: check DIR's parts (a call's files_at), keep them in DEST (.gpu/state)
#   bash bench/run_state.sh list [DIR]      here or there: the runs a state holds (default .gpu/state)
#   bash bench/run_state.sh restore         device (a queue job): join the parts in $STATE (/tmp/state), check, untar
#                                           into $RUNS (a state kept in .gpu/state/NAME arrives in /tmp/state/NAME)
# The LC-Rec base model is not part of the state (only the adapter and ID rows are trained); its fingerprint is
# checked again when the run resumes, so the GGUF must be staged first (bench/lcrec_gpu.sh join).
set -euo pipefail
RUNS=${RUNS:-/tmp/repro}; PART=${PART_MB:-15}
die() { echo "run_state: $*" >&2; exit 2; }
join_check() {  # DIR -> DIR/state.tar, checked against DIR/state.sha256
  local d=$1
  [ -f "$d/state.sha256" ] || die "$d has no state.sha256 (not the output of 'run_state.sh save')"
  ls "$d"/state.tar.part-* > /dev/null 2>&1 || die "$d has no state.tar.part-* files"
  cat "$d"/state.tar.part-* > "$d/state.tar.tmp"
  (cd "$d" && mv state.tar.tmp state.tar && sha256sum -c --quiet state.sha256) || die "$d: checksum mismatch"
}
case "${1:-}" in
  save)
    shift; mkdir -p "$OUT"
    runs=("$@")
    if [ ${#runs[@]} -eq 0 ]; then
      for r in "$RUNS"/*/; do r=${r%/}; [ -f "$r/checkpoint.pt" ] && [ ! -f "$r/.row" ] && runs+=("$(basename "$r")"); done
    fi
    [ ${#runs[@]} -gt 0 ] || die "no unfinished run in $RUNS (checkpoint.pt without .row)"
    files=()
    for r in "${runs[@]}"; do
      [ -n "$(find "$RUNS/$r" -maxdepth 2 -name checkpoint.pt 2>/dev/null)" ] || die "$RUNS/$r has no checkpoint.pt (nor RUN/*/checkpoint.pt)"
      files+=("$r"); [ -f "$RUNS/$r.log" ] && files+=("$r.log")
    done
    ex=(); for r in "${runs[@]}"; do for e in ${EXCLUDE:-}; do ex+=(--exclude="$r/$e"); done; done
    tar cf "$OUT/state.tar" -C "$RUNS" "${ex[@]}" "${files[@]}"
    (cd "$OUT" && sha256sum state.tar | sed 's/ .*/  state.tar/' > state.sha256 && split -b "${PART}M" state.tar state.tar.part- && rm state.tar)
    n=$(ls "$OUT"/state.tar.part-* | wc -l)
    [ "$n" -le 7 ] || { rm -f "$OUT"/state.tar.part-* "$OUT/state.sha256"; die "the state needs $n parts of $PART MiB; a call brings back 7 beside the checksum: save fewer runs per call"; }
    echo "saved ${runs[*]} in $n part(s)"; ls -la "$OUT" ;;
  keep)
    src=${2:?usage: run_state.sh keep DIR [DEST]}; dest=${3:-.gpu/state}
    tmp=$(mktemp -d); cp "$src"/state.tar.part-* "$src"/state.sha256 "$tmp"/ 2>/dev/null || die "$src has no state parts"
    join_check "$tmp"
    rm -rf "$dest"; mkdir -p "$dest"
    mv "$tmp"/state.tar.part-* "$tmp"/state.sha256 "$dest"/; rm -rf "$tmp"
    echo "kept in $dest (carry: bash bench/pack_device.sh .gpu/carryS ${dest#.gpu/}, or its parts over two folders)"
    bash "$0" list "$dest" ;;
  list)
    d=${2:-.gpu/state}; tmp=$(mktemp -d); cp "$d"/state.tar.part-* "$d"/state.sha256 "$tmp"/; join_check "$tmp"
    tar tf "$tmp/state.tar" | awk -F/ 'NF > 1 && $1 != "" { print $1 }' | sort -u | while read -r r; do
      ep=$(tar xOf "$tmp/state.tar" "$r/log.jsonl" 2>/dev/null | wc -l); echo "$r: $ep epoch(s) logged"; done
    rm -rf "$tmp" ;;
  restore)
    d=${STATE:-/tmp/state}; join_check "$d"; mkdir -p "$RUNS"
    # a run already here (the same warm machine) is newer than the carried one: keep it
    tar xf "$d/state.tar" -C "$RUNS" --skip-old-files; rm -f "$d/state.tar"
    ls "$RUNS" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
esac
