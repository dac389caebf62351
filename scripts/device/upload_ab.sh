#!/usr/bin/env bash
# A/B of the hybrid step's small uploads (the host rows, a step's metadata)
# on one machine: read from pinned memory by a kernel
# (PAGED_CUDA_KERNEL_UPLOAD=1, the default) or copied by DMA (0), which
# queues them behind the pager's layer copies on the copy engine. llama-7b
# f16, 32 layers, 4 GiB,
# batch 1, fixed host share SHARE (0.6), alternated ROUNDS (2) times; then
# the tuned share with the kernel. Carry .device (bundle.tar.xz). Table last.
set -uo pipefail
final=${OUT:-/tmp/out}
out=$(mktemp -d)
B=bundle/run
M=/tmp/ab7b
[[ -d bundle ]] || tar -xJf .device/bundle.tar.xz
export PAGED_SOURCE_DIR=$PWD PAGED_SHARED_MODELS=$PWD/bundle/models
$B pagectl make-model --preset=llama-7b --layers=32 --dtype=f16 --out=$M >"$out/make.log" 2>&1
$B paged-store --model=$M --weight-format=f16 --segment=ab7b --kv-gib=1.2 --quiet >"$out/store.log" 2>&1 &
for _ in $(seq 900); do grep -q ready "$out/store.log" && break; sleep 0.2; done
row() {  # NAME FILE
  printf '%-14s %s | %s\n' "$1" "$(grep -E '^hybrid +decode' "$2" | awk '{print $4" ms "$5" tok/s H2D "$6" MB share "$9}')" \
    "$(grep -o 'decode host path.*' "$2" | sed 's/decode host path per step (mean): //')"
}
{
  for r in $(seq ${ROUNDS:-2}); do
    for k in 1 0; do
      PAGED_CUDA_KERNEL_UPLOAD=$k timeout 60 $B paged-bench --segment=ab7b --device=cuda:0 \
        --gpu-budget=4GiB --batch=1 --prompt-len=16 --gen-len=24 --mode=hybrid \
        --host-compute=${SHARE:-0.6} >"$out/k$k-$r.txt" 2>&1
      row "kernel=$k" "$out/k$k-$r.txt"
    done
  done
  PAGED_CUDA_KERNEL_UPLOAD=1 timeout 90 $B paged-bench --segment=ab7b --device=cuda:0 --gpu-budget=4GiB --batch=1 \
    --prompt-len=16 --gen-len=200 --mode=hybrid >"$out/tuned.txt" 2>&1
  row "tuned, kernel" "$out/tuned.txt"
  grep -h "tuned on\|host executor" "$out/tuned.txt"
} | tee "$final/upload_ab.txt"
pkill -f "segment=ab7b"
tar -czf "$final/upload_logs.tgz" -C "$out" .
