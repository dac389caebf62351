#!/usr/bin/env bash
# Where an all-resident decode step's time goes, op by op (issue 12's
# HBM-floor target), on the GPU machine. Carry .device/bundle.tar.xz.
# llama-7b shape (LAYERS=32) in store segments of FORMATS (f16); runs
# paged-bench --mode=resident at batch 1 with PAGED_CUDA_PROFILE=1 (the CUDA
# backend times each op with events, the host queued ahead: op_profile.h;
# the device has no Nsight) and prints the backend's table: GPU ms by op and
# shape over the prompt step and 64 decode steps. RUNS="tag:VAR=value,..."
# names the runs and their settings (default: one, as the code is).
# Logs under $OUT (logs.tgz), the tables last (and $OUT/table.txt).
set -uo pipefail
final=${OUT:-/tmp/out}
out=$(mktemp -d)
B=bundle/run
L=${LAYERS:-32}
M=/tmp/r$L  # resident_floor.sh's model, when the machine is the same
[[ -d bundle ]] || tar -xJf .device/bundle.tar.xz
export PAGED_SOURCE_DIR=$PWD PAGED_SHARED_MODELS=$PWD/bundle/models
[[ -d $M ]] || $B pagectl make-model --preset=llama-7b --layers=$L --dtype=f16 --out=$M >"$out/make.log" 2>&1 ||
  { tail "$out/make.log"; exit 1; }
for f in ${FORMATS:-f16}; do
  $B paged-store --model=$M --weight-format=$f --segment=p-$f --kv-gib=1.2 --quiet >"$out/store-$f.log" 2>&1 &
  for _ in $(seq 900); do grep -q ready "$out/store-$f.log" && break; sleep 0.2; done
  for run in ${RUNS:-code:}; do
    tag=$f-b1-${run%%:*}
    envs=${run#*:}
    echo "$envs" >"$out/$tag.envs"
    env PAGED_CUDA_PROFILE=1 ${envs//,/ } timeout 200 $B paged-bench --segment=p-$f --device=cuda:0 \
      --mode=resident --prompt-len=32 --gen-len=64 --batch=1 >"$out/$tag.txt" 2>&1
  done
  pkill -f "segment=p-$f"; sleep 1
done
{
  for x in "$out"/*-b1-*.txt; do
    tag=$(basename "$x" .txt)
    echo "== $tag ($(cat "$out/$tag.envs")), 1 prompt step + 64 decode steps"
    sed -n '/^cuda op profile/,/^ops /p' "$x" | head -30
  done
} | tee "$final/table.txt"
tar -czf "$final/logs.tgz" -C "$out" .
