#!/usr/bin/env bash
# The hybrid decode step's host share swept by hand on one machine (issue
# 12): llama-7b shape, 32 layers, 4 GiB budget, batch 1, FORMAT (f16), with
# the planner's share (planned), the tuned one (auto), fixed shares SHARES,
# everything copied (paged) for reference, SLOTS3=1: 3 device slots. Prints per run the decode
# tokens/s and where the host path spent each step (Engine::HostPathTimes):
# which share the link and the host really balance at, against the share
# the planner predicts from bandwidths measured at start. Carry .device
# (bundle.tar.xz from make_bundle.sh). Table last; logs in $OUT/sweep_logs.tgz.
set -uo pipefail
final=${OUT:-/tmp/out}
out=$(mktemp -d)
B=bundle/run
F=${FORMAT:-f16}
M=/tmp/sweep32
[[ -d bundle ]] || tar -xJf .device/bundle.tar.xz
export PAGED_SOURCE_DIR=$PWD PAGED_SHARED_MODELS=$PWD/bundle/models
[[ -d $M ]] || $B pagectl make-model --preset=llama-7b --layers=32 --dtype=f16 --out=$M >"$out/make.log" 2>&1
$B paged-store --model=$M --weight-format=$F --segment=sw-$F --kv-gib=1.2 --quiet >"$out/store.log" 2>&1 &
for _ in $(seq 900); do grep -q ready "$out/store.log" && break; sleep 0.2; done
one() {  # NAME ARGS...
  local name=$1
  shift
  timeout ${RUN_TIMEOUT:-90} $B paged-bench --segment=sw-$F --device=cuda:0 --gpu-budget=4GiB \
    --batch=1 --prompt-len=16 --gen-len=${GEN:-24} "$@" >"$out/$name.txt" 2>&1
  printf '%-16s %s | %s\n' "$name" \
    "$(grep -E '^(hybrid|paged) +decode' "$out/$name.txt" | awk '{print $4" ms "$5" tok/s host% "$9}')" \
    "$(grep -o 'decode host path.*' "$out/$name.txt" | sed 's/decode host path per step (mean): //')"
}
{
  echo "== $F, batch 1: median step ms, tok/s, host share | host path per step"
  one paged --mode=paged
  one planned --mode=hybrid --host-compute=planned
  # The tuner settles in 60-80 steps: enough steps that most are settled.
  GEN=${TUNE_GEN:-200} one auto --mode=hybrid
  grep -h "tuned on" "$out/auto.txt"
  for s in ${SHARES:-0.40 0.50 0.60}; do
    one "share$s" --mode=hybrid --host-compute=$s
  done
  [[ -n ${SLOTS3:-} ]] && one planned-s3 --mode=hybrid --host-compute=planned --slots=3
  grep -h "host executor\|link" "$out/planned.txt" | head -3
} | tee "$final/sweep_table.txt"
pkill -f "segment=sw-$F"
tar -czf "$final/sweep_logs.tgz" -C "$out" .
