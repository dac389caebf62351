#!/usr/bin/env bash
# Resident-engine speed of docs/BENCHMARKS.md (the engine issue's floors):
# llama-7b shapes, 8 layers, f16, all layers on the GPU; decode at batch 1,
# 16, 64 and a 2048-token prefill. Logs under $OUT.
set -uo pipefail
out=${OUT:-/tmp/out}
bdir=${BUNDLE:-bundle}
B=$bdir/run
M=/tmp/llama7b-8
$B pagectl make-model --preset=llama-7b --layers=8 --out=$M >"$out/make8.log" 2>&1 || exit 1
for b in 1 16 64; do
  timeout 200 $B paged-bench --model=$M --device=cuda:0 --mode=resident --batch=$b --prompt-len=128 --gen-len=64 \
    >"$out/res_b$b.txt" 2>&1
  echo "== resident b$b"; grep -E "^resident" "$out/res_b$b.txt"
done
timeout 200 $B paged-bench --model=$M --device=cuda:0 --mode=resident --batch=1 --prompt-len=2048 --gen-len=2 \
  >"$out/res_prefill.txt" 2>&1
echo "== resident prefill 2048"; grep -E "^resident" "$out/res_prefill.txt"
