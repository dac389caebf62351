#!/usr/bin/env bash
# The paging benchmarks of docs/BENCHMARKS.md on the GPU machine (bundle/
# carried): llama-7b shapes, 32 layers, random weights; one store segment per
# weight format, paged-bench against each. Logs under $OUT.
set -uo pipefail
out=${OUT:-/tmp/out}
bdir=${BUNDLE:-bundle}
B=$bdir/run
M=/tmp/llama7b-32
$B pagectl make-model --preset=llama-7b --layers=32 --out=$M >"$out/make.log" 2>&1 || { cat "$out/make.log"; exit 1; }
store() {  # format kv-gib
  $B paged-store --model=$M --segment=b-$1 --weight-format=$1 --kv-gib=$2 --quiet >"$out/store-$1.log" 2>&1 &
  for _ in $(seq 600); do grep -q ready "$out/store-$1.log" && break; sleep 0.5; done
  cat "$out/store-$1.log"
}
bench() {  # name args...
  local name=$1; shift
  timeout 300 $B paged-bench --device=cuda:0 --gpu-budget=4GiB "$@" >"$out/$name.txt" 2>&1
  echo "== $name: $*"; grep -E "^(link|paged|resident)|Rss" "$out/$name.txt"
}
store f16 9
bench f16_b1 --segment=b-f16 --batch=1 --prompt-len=128 --gen-len=32
bench f16_b64 --segment=b-f16 --batch=64 --prompt-len=128 --gen-len=128
bench f16_prefill --segment=b-f16 --batch=8 --prompt-len=2048 --gen-len=2
store int8 0.5
bench int8_b1 --segment=b-int8 --batch=1 --prompt-len=128 --gen-len=32 --mode=paged
store int4 0.5
bench int4_b1 --segment=b-int4 --batch=1 --prompt-len=128 --gen-len=32 --mode=paged
grep -h "memory plan" -A7 "$out/f16_b1.txt"
