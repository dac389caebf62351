#!/usr/bin/env bash
# paged beside llama.cpp on the GPU machine: the same llama-7b-shaped
# checkpoint (made here by pagectl, written as GGUF by scripts/hf_to_gguf.py
# with llama.cpp's gguf-py), the same 4 GiB device budget, decode tokens/s at
# batch 1 and 64. llama.cpp is a baseline only: its source comes from the npm
# package node-llama-cpp (pin 3.21.1) as a tarball carried in .device/
# (scripts/device/fetch_llamacpp.sh makes it), built here; nothing of it
# enters the project.
#
# Carry .device (bundle.tar.xz from make_bundle.sh, llama-src.tar.xz).
# Env: LAYERS (32), NGL_F16 (8), NGL_Q8 (15), NGL_Q4 (28): llama.cpp's
# -ngl, chosen so its weights stay under the budget. PAGED_FORMATS (f16 int8
# int4 q4km), NO_FUSED=1 (without the fused quantized GEMV).
set -uo pipefail
out=${OUT:-/tmp/out}
B=bundle/run
L=${LAYERS:-32}
M=/tmp/m$L
[[ -d bundle ]] || tar -xJf ${BUNDLE_TAR:-.device/bundle.tar.xz}
source scripts/device/llama_build.sh
start_llama_build "$out/llama-build.log"
$B pagectl make-model --preset=llama-7b --layers=$L --dtype=f16 --out=$M >"$out/make.log" 2>&1
PYTHONPATH=/tmp/llama/gguf-py python3 scripts/hf_to_gguf.py $M $M.gguf >"$out/gguf.log" 2>&1
wait $build_pid || { tail -20 "$out/llama-build.log"; exit 1; }
LB=/tmp/llama/build/bin
$LB/llama-quantize $M.gguf $M-q8.gguf Q8_0 >"$out/q8.log" 2>&1
$LB/llama-quantize $M.gguf $M-q4km.gguf Q4_K_M >"$out/q4.log" 2>&1
lbench() {  # name gguf ngl
  $LB/llama-bench -m "$2" -ngl "$3" -p 0 -n 32 -r 2 -o md >"$out/llama-$1.txt" 2>&1
  $LB/llama-batched-bench -m "$2" -ngl "$3" -c 8192 -npp 32 -ntg 16 -npl 1,64 \
    >"$out/llama-batched-$1.txt" 2>&1
}
lbench f16 $M.gguf ${NGL_F16:-8}
lbench q8 $M-q8.gguf ${NGL_Q8:-15}
lbench q4km $M-q4km.gguf ${NGL_Q4:-28}
nvidia-smi --query-gpu=name --format=csv,noheader
# NO_FUSED=1: without the fused quantized decode GEMV (worker/backends/cuda/weights.h).
[[ -n ${NO_FUSED:-} ]] && export PAGED_CUDA_FUSED_GEMV=0
# Our formats from the f16 checkpoint, and llama.cpp's Q4_K_M file read as
# stored (--weight-format=native).
for f in ${PAGED_FORMATS:-f16 int8 int4 q4km}; do
  if [[ $f == q4km ]]; then src="--model=$M-q4km.gguf --weight-format=native"
  else src="--model=$M --weight-format=$f"; fi
  $B paged-store $src --segment=s-$f --kv-gib=1.2 --quiet >"$out/store-$f.log" 2>&1 &
  for _ in $(seq 900); do grep -q ready "$out/store-$f.log" && break; sleep 0.2; done
  for b in 1 64; do
    timeout 240 $B paged-bench --segment=s-$f --device=cuda:0 --gpu-budget=4GiB --batch=$b \
      --prompt-len=32 --gen-len=16 --mode=all >"$out/paged-$f-b$b.txt" 2>&1
  done
  pkill -f "segment=s-$f"; sleep 1
done
echo "== llama.cpp (tg32, llama-bench; batched-bench S_TG t/s at 1 and 64)"
grep -h "tg32" "$out"/llama-*.txt
grep -h -E "^\| +32 \| +16 \| +(1|64) \|" "$out"/llama-batched-*.txt
echo "== paged (decode rows)"
for f in "$out"/paged-*.txt; do echo "-- $(basename "$f" .txt)"; grep -E "^(paged|hybrid|resident) +decode" "$f"; done
