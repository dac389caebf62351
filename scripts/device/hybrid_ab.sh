#!/usr/bin/env bash
# A/B of the hybrid decode step on one machine: the host's products of one
# input (q, k, v; gate, up) in one dispatch over the host threads or one
# dispatch each (PAGED_HOST_ONE_DISPATCH=0), llama-7b shape, 4 GiB budget,
# batch 1, alternated twice. Carry .device (bundle.tar.xz). Table last.
set -uo pipefail
final=${OUT:-/tmp/out}
out=$(mktemp -d)
B=bundle/run
M=/tmp/ab32
[[ -d bundle ]] || tar -xJf .device/bundle.tar.xz
export PAGED_SOURCE_DIR=$PWD PAGED_SHARED_MODELS=$PWD/bundle/models
$B pagectl make-model --preset=llama-7b --layers=32 --dtype=f16 --out=$M >"$out/make.log" 2>&1
for f in ${FORMATS:-f16 int8}; do
  $B paged-store --model=$M --weight-format=$f --segment=ab-$f --kv-gib=1.2 --quiet >"$out/store-$f.log" 2>&1 &
  for _ in $(seq 900); do grep -q ready "$out/store-$f.log" && break; sleep 0.2; done
  for k in 1 0 1 0; do
    PAGED_HOST_ONE_DISPATCH=$k timeout 100 $B paged-bench --segment=ab-$f --device=cuda:0 \
      --gpu-budget=4GiB --batch=1 --prompt-len=16 --gen-len=24 --mode=hybrid >"$out/$f-$k.txt" 2>&1
    echo "$f one_dispatch=$k: $(grep -E '^hybrid +decode' "$out/$f-$k.txt")  [$(grep -o 'host executor [0-9.]* GB/s' "$out/$f-$k.txt")]"
  done | tee -a "$final/table.txt"
  pkill -f "segment=ab-$f"; sleep 1
done
tar -czf "$final/logs.tgz" -C "$out" .
