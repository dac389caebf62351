#!/usr/bin/env bash
# Serving overhead on the GPU machine (bundle carried): the same model and
# batch in-process (paged-bench) and through the gRPC service (store +
# coordinator + one worker, 32 concurrent clients). Logs under $OUT.
set -uo pipefail
out=${OUT:-/tmp/out}
bdir=${BUNDLE:-bundle}
B=$bdir/run
M=/tmp/llama7b-8s
clients=${CLIENTS:-32}
$B pagectl make-model --preset=llama-7b --layers=8 --out=$M >"$out/make.log" 2>&1 || exit 1
$B paged-store --model=$M --segment=sv --weight-format=f16 --kv-gib=4 --quiet >"$out/store.log" 2>&1 &
for _ in $(seq 600); do grep -q ready "$out/store.log" && break; sleep 0.2; done
timeout 200 $B paged-bench --segment=sv --device=cuda:0 --gpu-budget=4GiB --batch=$clients --prompt-len=128 \
  --gen-len=64 --mode=paged --max-step-tokens=4096 >"$out/inproc.txt" 2>&1
echo "== in-process (paged-bench)"; grep -E "^paged" "$out/inproc.txt"
sock=unix:///tmp/paged-bench.sock
$B paged --segment=sv --listen=$sock --max-seqs-per-step=$clients --max-step-tokens=4096 --prefill-chunk=128 \
  >"$out/coord.log" 2>&1 &
for _ in $(seq 300); do grep -q "listening on" "$out/coord.log" && break; sleep 0.1; done
$B paged-worker --segment=sv --device=cuda:0 --gpu-budget=4GiB --coordinator=$sock --max-step-seqs=$clients \
  --max-step-tokens=4096 >"$out/worker.log" 2>&1 &
for _ in $(seq 300); do grep -q "attached" "$out/worker.log" && break; sleep 0.1; done
$B serving_bench --server=$sock --clients=$clients --prompt-len=128 --gen-len=64 >"$out/warm.txt" 2>&1
echo "== through gRPC (serving_bench, after one warm-up round)"
$B serving_bench --server=$sock --clients=$clients --prompt-len=128 --gen-len=64 | tee "$out/serving.txt"
