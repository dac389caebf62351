#!/usr/bin/env bash
# The hybrid step on the GPU machine (bundle/ carried, scripts/device/
# make_bundle.sh): the GPU tests, the CPU executor on the host's CPU, then a
# llama-7b-shaped model (32 layers, f16, random weights) paged with and
# without the host computing its share, at batch 1 and 64, in f16, int8 and
# int4, on a 4 GiB budget. Logs under $OUT; a short table last.
#   SKIP_TESTS=1: no GPU tests. FORMATS="f16 int8 int4": the formats benched.
#   LAYERS=32, BUDGET=4GiB: the model's depth and the device budget (a
#   quick run: LAYERS=8 BUDGET=1536MiB FORMATS=f16 NO_CPU_BENCH=1).
set -uo pipefail
out=${OUT:-/tmp/out}
bdir=${BUNDLE:-bundle}
B=$bdir/run
L=${LAYERS:-32}
M=/tmp/llama7b-$L
export PAGED_SOURCE_DIR=$PWD PAGED_SHARED_MODELS=$PWD/$bdir/models
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
lscpu | grep -E "Model name|^CPU\(s\)" | tee -a "$out/gpu.txt"
if [[ -z ${SKIP_TESTS:-} ]]; then
  for t in backend_ops_gpu_test engine_gpu_test; do
    timeout 300 "$B" "$t" --gtest_brief=1 >"$out/$t.log" 2>&1
    printf '%-22s %s\n' "$t" "$(grep -E '^\[  (PASSED|FAILED)' "$out/$t.log" | tr '\n' ' ')"
  done
fi
[[ -n ${NO_CPU_BENCH:-} ]] || timeout 120 "$B" cpu_matmul_bench --threads=16 --seconds=0.1 --dtypes=f16,int8,int4 \
  --batches=1,8,64 >"$out/cpu_matmul.txt" 2>&1
"$B" pagectl make-model --preset=llama-7b --layers=$L --dtype=f16 --out=$M >"$out/make.log" 2>&1 ||
  { cat "$out/make.log"; exit 1; }
store() {  # format kv-gib
  "$B" paged-store --model=$M --segment=h-$1 --weight-format=$1 --kv-gib=$2 --quiet \
    >"$out/store-$1.log" 2>&1 &
  for _ in $(seq 900); do grep -q ready "$out/store-$1.log" && break; sleep 0.2; done
}
bench() {  # name args...
  local name=$1; shift
  timeout 240 "$B" paged-bench --device=cuda:0 --gpu-budget=${BUDGET:-4GiB} "$@" >"$out/$name.txt" 2>&1
}
for f in ${FORMATS:-f16 int8 int4}; do
  store "$f" 1.2
  bench "${f}_b1" --segment=h-$f --batch=1 --prompt-len=32 --gen-len=24 --mode=all
  [[ $f == f16 && -z ${NO_B64:-} ]] && bench "${f}_b64" --segment=h-$f --batch=64 --prompt-len=32 --gen-len=12 --mode=all
  pkill -f "segment=h-$f" ; sleep 1
done
grep -h -A6 "^hybrid step" "$out"/f16_b1.txt
grep -h "memory plan" -A7 "$out/f16_b1.txt"
echo "== cpu executor (16 threads)"; grep -E "cpu_exec (f16|int8|int4) +4096x4096|read bandwidth" "$out/cpu_matmul.txt"
echo "== decode (and prefill) rows"
for f in "$out"/*_b*.txt; do
  echo "-- $(basename "$f" .txt)"; grep -E "^(paged|hybrid|resident) " "$f"
done
