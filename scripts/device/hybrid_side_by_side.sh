#!/usr/bin/env bash
# Batch-1 decode of the hybrid step beside llama.cpp on ONE machine (issue
# 12): the host's memory bandwidth differs from one GPU machine to the
# next, and both sides depend on it. llama-7b shape, 32 layers, 4 GiB.
#   1. paged first, alone on the machine: hybrid_sweep.sh for FORMATS (f16
#      int8: paged, planned share, tuned share);
#   2. then llama.cpp (.device/llama-src.tar.xz, fetch_llamacpp.sh) built
#      while the checkpoint is written as GGUF f16 and Q8_0
#      (scripts/hf_to_gguf.py), and llama-bench tg32 at -ngl NGL_F16 (8)
#      and NGL_Q8 (15), the layers that fit 4 GiB.
# Carry .device (bundle.tar.xz, llama-src.tar.xz). Table last.
set -uo pipefail
final=${OUT:-/tmp/out}
B=bundle/run
M=/tmp/sweep32
[[ -d bundle ]] || tar -xJf .device/bundle.tar.xz
[[ -d $M ]] || $B pagectl make-model --preset=llama-7b --layers=32 --dtype=f16 --out=$M \
  >"$final/make.log" 2>&1
for f in ${FORMATS:-f16 int8}; do
  FORMAT=$f SHARES=" " TUNE_GEN=${TUNE_GEN:-120} OUT=$final bash scripts/device/hybrid_sweep.sh \
    >/dev/null 2>&1
  mv "$final/sweep_table.txt" "$final/paged-$f.txt"
done
source scripts/device/llama_build.sh
start_llama_build "$final/llama-build.log"
export PYTHONPATH=/tmp/llama/gguf-py
python3 scripts/hf_to_gguf.py $M $M.gguf >"$final/gguf-f16.log" 2>&1 &
g1=$!
python3 scripts/hf_to_gguf.py --q8_0 $M $M-q8.gguf >"$final/gguf-q8.log" 2>&1 &
g2=$!
wait $g1 $g2 $build_pid
LB=/tmp/llama/build/bin
$LB/llama-bench -m $M.gguf -ngl ${NGL_F16:-8} -p 0 -n 32 -r 2 -o md >"$final/llama-f16.txt" 2>&1
$LB/llama-bench -m $M-q8.gguf -ngl ${NGL_Q8:-15} -p 0 -n 32 -r 2 -o md >"$final/llama-q8.txt" 2>&1
{
  nvidia-smi --query-gpu=name --format=csv,noheader
  for f in ${FORMATS:-f16 int8}; do cat "$final/paged-$f.txt"; done
  echo "== llama.cpp llama-bench tg32 (f16 -ngl ${NGL_F16:-8}, Q8_0 -ngl ${NGL_Q8:-15})"
  grep -h "tg32" "$final"/llama-f16.txt "$final"/llama-q8.txt
} | tee "$final/table.txt"
