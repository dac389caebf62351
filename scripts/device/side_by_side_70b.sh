#!/usr/bin/env bash
# Issue 12's tables for a 70B shape on the GPU machine: `pagectl make-model
# --preset llama-70b --layers 16` (f16, 28 GB), written straight to a Q8_0
# GGUF (scripts/hf_to_gguf.py --q8_0: gguf-py's quantizer, the tensors
# bit for bit llama-quantize's) and requantized to Q4_K_M by llama-quantize;
# paged reads both files as stored (--weight-format=native), llama.cpp the
# same files. 8 GiB device budget; decode at batch 1 and 64. llama.cpp is a
# baseline only (its source from the npm package node-llama-cpp, carried as
# .device/llama-src.tar.xz and built here).
#
# Carry .device (bundle.tar.xz, llama-src.tar.xz). Env: LAYERS (16), NGL_Q8
# (8: 7.3 GB of layers) and NGL_Q4 (15: 7.8 GB): llama.cpp's -ngl, its
# weights and buffers under 8 GiB (the table shows its buffers);
# SKIP_LLAMA=1 (paged only). Logs under $OUT (logs.tgz), the table last.
set -uo pipefail
final=${OUT:-/tmp/out}
out=$(mktemp -d)
B=bundle/run
L=${LAYERS:-16}
M=/tmp/b$L
[[ -d bundle ]] || tar -xJf .device/bundle.tar.xz
source scripts/device/llama_build.sh
start_llama_build "$out/llama-build.log"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/gpu.txt"
t0=$SECONDS
$B pagectl make-model --preset=llama-70b --layers=$L --dtype=f16 --out=$M >"$out/make.log" 2>&1 ||
  { tail "$out/make.log"; exit 1; }
PYTHONPATH=/tmp/llama/gguf-py python3 scripts/hf_to_gguf.py $M $M-q8.gguf --q8_0 \
  >"$out/gguf.log" 2>&1 || { tail "$out/gguf.log"; exit 1; }
rm -rf $M
echo "model made and written as Q8_0 in $((SECONDS - t0)) s" | tee "$out/times.txt"
wait $build_pid || { tail -20 "$out/llama-build.log"; exit 1; }
LB=/tmp/llama/build/bin
$LB/llama-quantize --allow-requantize $M-q8.gguf $M-q4km.gguf Q4_K_M 16 >"$out/q4.log" 2>&1 ||
  { tail "$out/q4.log"; exit 1; }
sync
ls -la $M-*.gguf | tee -a "$out/times.txt"
for f in q8 q4km; do
  $B paged-store --model=$M-$f.gguf --weight-format=native --segment=b-$f --kv-gib=2 --quiet \
    >"$out/store-$f.log" 2>&1 &
  for _ in $(seq 1500); do grep -q ready "$out/store-$f.log" && break; sleep 0.2; done
  timeout 200 $B paged-bench --segment=b-$f --device=cuda:0 --gpu-budget=8GiB --batch=1 \
    --prompt-len=32 --gen-len=16 --mode=all >"$out/paged-$f-b1.txt" 2>&1
  timeout 200 $B paged-bench --segment=b-$f --device=cuda:0 --gpu-budget=8GiB --batch=64 \
    --prompt-len=32 --gen-len=8 --mode=all >"$out/paged-$f-b64.txt" 2>&1
  pkill -f "segment=b-$f"
  sleep 1
done
if [[ -z ${SKIP_LLAMA:-} ]]; then
  lbench() {  # name gguf ngl
    $LB/llama-bench -m "$2" -ngl "$3" -p 0 -n 16 -r 2 -o md >"$out/llama-$1.txt" 2>&1
    $LB/llama-batched-bench -m "$2" -ngl "$3" -c 4096 -npp 32 -ntg 8 -npl 1,64 \
      >"$out/llama-batched-$1.txt" 2>&1
  }
  lbench q8 $M-q8.gguf ${NGL_Q8:-8}
  lbench q4km $M-q4km.gguf ${NGL_Q4:-15}
fi
{
  cat "$out/times.txt"
  echo "== llama.cpp (tg16, llama-bench; batched-bench S_TG t/s at 1 and 64; its device memory)"
  grep -h "tg16" "$out"/llama-q*.txt
  grep -h -E "^\| +32 \| +8 \| +(1|64) \|" "$out"/llama-batched-*.txt
  grep -h -E "CUDA0 (model|KV) buffer size" "$out"/llama-batched-*.txt | sort | uniq
  echo "== paged (decode rows; the plan)"
  for x in "$out"/paged-*.txt; do
    echo "-- $(basename "$x" .txt)"
    grep -E "resident layers|^hybrid mode|^(paged|hybrid|resident) +decode" "$x"
  done
} | tee "$final/table.txt"
tar -czf "$final/logs.tgz" -C "$out" .
