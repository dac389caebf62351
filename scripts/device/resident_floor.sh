#!/usr/bin/env bash
# All-resident decode against the HBM floor (issue 12), and the prefill
# target, on the GPU machine. Carry .device/bundle.tar.xz (make_bundle.sh's
# bundle, tar.xz'd). llama-7b shape (LAYERS=32), f16 in a store segment.
#   - the decode GEMV alone: backend_ops_gpu_test's timing case with the
#     fused GEMV on and off (PAGED_CUDA_FUSED_GEMV=0: cuBLAS);
#   - resident decode at batch 1 and 8: op by op through cuBLAS (the old
#     path), op by op through the GEMV, and replayed step graphs (f16 also
#     with the residual add after the GEMV, PAGED_CUDA_GEMV_ADD=0, the norm
#     in its own launch, PAGED_CUDA_GEMV_NORM=0, and the launches as
#     programmatic dependents, PAGED_CUDA_PDL=1, and a block's rows never /
#     always split between its warps, PAGED_CUDA_GEMV_SPLIT=0 / 1, also for
#     int8 / int4, and decode rows' attention on the decode kernel,
#     PAGED_CUDA_ATTN_DECODE=1, attention_decode.h); ROWS="pdl nosplit ..." runs only those
#     variants (default: all);
#     FORMATS (f16) adds int8 / int4 segments;
#   - PREFILL=1: 8 x 2048 prefill, paged (4 GiB) and resident.
# Logs under $OUT (logs.tgz), the table last (and $OUT/table.txt).
set -uo pipefail
final=${OUT:-/tmp/out}
out=$(mktemp -d)
B=bundle/run
L=${LAYERS:-32}
M=/tmp/r$L
[[ -d bundle ]] || tar -xJf .device/bundle.tar.xz
export PAGED_SOURCE_DIR=$PWD PAGED_SHARED_MODELS=$PWD/bundle/models
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/gpu.txt"
for fused in ${FUSED_LIST:-1 0}; do
  PAGED_CUDA_FUSED_GEMV=$fused timeout 240 $B backend_ops_gpu_test --gtest_also_run_disabled_tests \
    --gtest_filter='TimingGpuTest.DISABLED_PrintTimings' >"$out/timing-fused$fused.txt" 2>&1
done
$B pagectl make-model --preset=llama-7b --layers=$L --dtype=f16 --out=$M >"$out/make.log" 2>&1 ||
  { tail "$out/make.log"; exit 1; }
kv=${KV_GIB:-1.2}
[[ -n ${PREFILL:-} ]] && kv=9
for f in ${FORMATS:-f16}; do
  $B paged-store --model=$M --weight-format=$f --segment=r-$f --kv-gib=$kv --quiet \
    >"$out/store-$f.log" 2>&1 &
  for _ in $(seq 900); do grep -q ready "$out/store-$f.log" && break; sleep 0.2; done
  run() {  # name "VAR=value ..." paged-bench flags...
    local name=$1 envs=$2
    shift 2
    local tag=${name#"$f"-b*-}
    tag=${tag%-graphs}
    [[ $tag != graphs && -n ${ROWS:-} && " $ROWS " != *" $tag "* ]] && return 0
    env $envs timeout 150 $B paged-bench --segment=r-$f --device=cuda:0 --mode=resident \
      --prompt-len=32 --gen-len=64 "$@" >"$out/$name.txt" 2>&1
  }
  for b in ${BATCHES:-1 2 8}; do run $f-b$b-graphs "" --batch=$b; done
  run $f-b1-pdl-graphs "PAGED_CUDA_PDL=1" --batch=1
  run $f-b1-nosplit-graphs "PAGED_CUDA_GEMV_SPLIT=0" --batch=1
  run $f-b1-splitall-graphs "PAGED_CUDA_GEMV_SPLIT=1" --batch=1
  run $f-b1-attndec-graphs "PAGED_CUDA_ATTN_DECODE=1" --batch=1
  if [[ $f == f16 ]]; then
    run f16-b1-normapart-graphs "PAGED_CUDA_GEMV_NORM=0" --batch=1
    run f16-b1-gemv "" --batch=1 --graphs=false
    run f16-b1-rows1-graphs "PAGED_CUDA_GEMV_ROWS=1" --batch=1
    run f16-b1-nojoin-graphs "PAGED_CUDA_GEMV_JOIN=0" --batch=1
    run f16-b1-addafter-graphs "PAGED_CUDA_GEMV_ADD=0" --batch=1
    run f16-b1-cublas "PAGED_CUDA_FUSED_GEMV=0" --batch=1 --graphs=false
    run f16-b8-cublas "PAGED_CUDA_FUSED_GEMV=0" --batch=8 --graphs=false
  fi
  # Prefill of 8 x 2048 tokens, paged (4 GiB) and resident, in steps of
  # STEP_TOKENS tokens each (paged-bench's default 2048: the paged weights
  # cross the link once per step).
  if [[ -n ${PREFILL:-} && $f == f16 ]]; then
    for st in ${STEP_TOKENS:-2048 16384}; do
      timeout 300 $B paged-bench --segment=r-$f --device=cuda:0 --gpu-budget=4GiB --batch=8 \
        --prompt-len=2048 --gen-len=2 --mode=both --max-step-tokens=$st \
        >"$out/$f-prefill-8x2048-step$st.txt" 2>&1
    done
  fi
  pkill -f "segment=r-$f"; sleep 1
done
{
  echo "== decode GEMV, 14336 x 4096 (fused on, then cuBLAS)"
  grep -h "TIMING matmul" "$out"/timing-fused1.txt | grep -E "n=(1|2|4|8):"
  echo "== decode GEMV by rows per warp (0: its own choice)"
  grep -h "TIMING gemv" "$out"/timing-fused1.txt
  [[ -f $out/timing-fused0.txt ]] && grep -h "TIMING matmul" "$out"/timing-fused0.txt | grep -E "n=(1|2|8):"
  echo "== resident decode (step ms, tok/s); weights GB in the plan line"
  for x in "$out"/*-b[0-9]*.txt; do
    echo "-- $(basename "$x" .txt)"
    grep -E "^resident step graphs|^resident +(decode|prefill)|weights" "$x" | head -4
  done
  for x in "$out"/f16-prefill-*.txt; do
    [[ -f $x ]] && { echo "-- $(basename "$x" .txt)"; grep -E "^(paged|resident) +prefill" "$x"; }
  done
} | tee "$final/table.txt"
tar -czf "$final/logs.tgz" -C "$out" .
