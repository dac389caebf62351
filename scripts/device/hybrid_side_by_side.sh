#!/usr/bin/env bash
# Batch-1 decode of the hybrid step beside llama.cpp on ONE machine (issue
# 12): the host's memory bandwidth differs from one GPU machine to the
# next, and both sides depend on it. llama-7b shape, 32 layers, 4 GiB.
#   1. preparation, all at once: llama.cpp (.device/llama-src.tar.xz,
#      fetch_llamacpp.sh) builds while the checkpoint is made and written
#      as GGUF f16 and Q8_0 (scripts/hf_to_gguf.py); with int4 in FORMATS,
#      llama-quantize then makes Q4_K_M;
#   2. measurements, one at a time on a quiet machine: paged's
#      hybrid_sweep.sh for each of FORMATS (f16 int8 [int4]: paged,
#      planned share, tuned share), then llama-bench tg32 at NGL_F16 (8),
#      NGL_Q8 (15), NGL_Q4 (28), the layers that fit 4 GiB.
# Carry .device (bundle.tar.xz, llama-src.tar.xz). Two files come back (the
# device returns at most 8): $OUT/table.txt, last on stdout too, with the
# phases' timestamps, and every log in $OUT/logs.tgz.
set -uo pipefail
out=${OUT:-/tmp/out}
logs=$(mktemp -d)  # packed into $OUT/logs.tgz at the end
B=bundle/run
M=/tmp/sweep32
formats=${FORMATS:-f16 int8}
stamp() { echo "$(date +%T) $*" >>"$logs/phases.txt"; }
[[ -d bundle ]] || tar -xJf .device/bundle.tar.xz
stamp start
source scripts/device/llama_build.sh
[[ -x /tmp/llama/build/bin/llama-bench ]] || start_llama_build "$logs/llama-build.log"
[[ -d $M ]] || $B pagectl make-model --preset=llama-7b --layers=32 --dtype=f16 --out=$M \
  >"$logs/make.log" 2>&1
stamp model made
export PYTHONPATH=/tmp/llama/gguf-py
[[ -f $M.gguf ]] || python3 scripts/hf_to_gguf.py $M $M.gguf >"$logs/gguf-f16.log" 2>&1 &
g1=$!
[[ -f $M-q8.gguf ]] || python3 scripts/hf_to_gguf.py --q8_0 $M $M-q8.gguf >"$logs/gguf-q8.log" 2>&1 &
g2=$!
wait $g1 $g2 ${build_pid:-}
stamp gguf written, llama.cpp built
LB=/tmp/llama/build/bin
if [[ $formats == *int4* && ! -f $M-q4km.gguf ]]; then
  $LB/llama-quantize $M.gguf $M-q4km.gguf Q4_K_M 16 >"$logs/quantize.log" 2>&1
  stamp Q4_K_M made
fi
for f in $formats; do
  FORMAT=$f SHARES=" " TUNE_GEN=${TUNE_GEN:-120} OUT=$logs bash scripts/device/hybrid_sweep.sh \
    >/dev/null 2>&1
  mv "$logs/sweep_table.txt" "$logs/paged-$f.txt"
  mv "$logs/sweep_logs.tgz" "$logs/paged-$f-logs.tgz"
  stamp paged $f measured
done
lbench() {  # NAME GGUF NGL
  $LB/llama-bench -m "$2" -ngl "$3" -p 0 -n 32 -r 3 -o md >"$logs/llama-$1.txt" 2>&1
  stamp llama.cpp $1 measured
}
for f in $formats; do
  case $f in
    f16) lbench f16 $M.gguf ${NGL_F16:-8} ;;
    int8) lbench q8 $M-q8.gguf ${NGL_Q8:-15} ;;
    int4) lbench q4km $M-q4km.gguf ${NGL_Q4:-28} ;;
  esac
done
{
  nvidia-smi --query-gpu=name --format=csv,noheader
  cat "$logs/phases.txt"
  for f in $formats; do cat "$logs/paged-$f.txt"; done
  echo "== llama.cpp llama-bench tg32 (f16 -ngl ${NGL_F16:-8}, Q8_0 -ngl ${NGL_Q8:-15}, Q4_K_M -ngl ${NGL_Q4:-28})"
  grep -h "tg32" "$logs"/llama-*.txt
} | tee "$logs/table.txt"
cp "$logs/table.txt" "$out/table.txt"
tar -czf "$out/logs.tgz" -C "$logs" .
