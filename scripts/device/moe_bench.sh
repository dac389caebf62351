#!/usr/bin/env bash
# Mixture-of-experts decode on the GPU machine (issue 14): a qwen3-30b-a3b
# shaped model (`pagectl make-model --preset qwen3-30b-a3b --layers LAYERS`,
# f16) with uniform (random) and skewed routers (--router-skew SKEW), on a
# BUDGET device budget: experts paged one by one against whole layers paged,
# the hybrid step (experts with few rows computed on the host), and the
# all-resident run, at batch 1 and 64. Carry .device with bundle.tar.xz
# (make_bundle.sh). Logs come back as $OUT/moe_logs.tgz, the table as
# $OUT/moe_table.txt (printed last).
set -uo pipefail
final=${OUT:-/tmp/out}
out=$(mktemp -d)
B=bundle/run
L=${LAYERS:-8}
BUDGET=${BUDGET:-4GiB}
SKEW=${SKEW:-2}
GEN=${GEN:-32}
[[ -d bundle ]] || tar -xJf .device/bundle.tar.xz
export PAGED_SOURCE_DIR=$PWD PAGED_SHARED_MODELS=$PWD/bundle/models
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/gpu.txt"
$B pagectl make-model --preset=qwen3-30b-a3b --layers=$L --out=/tmp/q3u >"$out/make_u.log" 2>&1 ||
  { tail "$out/make_u.log"; exit 1; }
$B pagectl make-model --preset=qwen3-30b-a3b --layers=$L --router-skew=$SKEW --out=/tmp/q3s \
  >"$out/make_s.log" 2>&1 || { tail "$out/make_s.log"; exit 1; }
du -sh /tmp/q3u | tee "$out/size.txt"
run() {  # NAME MODEL BATCH ARGS...
  local name=$1 m=$2 b=$3
  shift 3
  timeout ${RUN_TIMEOUT:-240} $B paged-bench --model=$m --device=cuda:0 --gpu-budget=$BUDGET \
    --batch=$b --prompt-len=64 --gen-len=$GEN "$@" >"$out/$name.log" 2>&1
  echo "== $name (exit $?)" >>"$out/summary.txt"
  grep -iE "decode|expert|hit|MB/token|plan|tokens/s" "$out/$name.log" | head -40 >>"$out/summary.txt"
  cp "$out/summary.txt" "$final/moe_table.txt"  # what ran so far, should the call be cut short
}
for r in u s; do
  for b in 1 64; do
    run "${r}_b${b}_paged" /tmp/q3$r $b --mode=paged --experts=both
    run "${r}_b${b}_hybrid" /tmp/q3$r $b --mode=hybrid
  done
  run "${r}_b1_resident" /tmp/q3$r 1 --mode=resident
done
cp "$out/summary.txt" "$final/moe_table.txt"
tar -czf "$final/moe_logs.tgz" -C "$out" .
cat "$final/moe_table.txt"
