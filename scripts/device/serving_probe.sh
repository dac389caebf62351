set -uo pipefail
out=$OUT; B=bundle-lead/run; M=/tmp/m8
$B pagectl make-model --preset=llama-7b --layers=8 --out=$M >/dev/null 2>&1
$B paged-store --model=$M --segment=sv --weight-format=f16 --kv-gib=4 --quiet >"$out/store.log" 2>&1 &
for _ in $(seq 600); do grep -q ready "$out/store.log" && break; sleep 0.2; done
sock=unix:///tmp/p.sock
$B paged --segment=sv --listen=$sock --max-seqs-per-step=32 --max-step-tokens=4096 --prefill-chunk=128 >"$out/coord.log" 2>&1 &
sleep 1
for kv in 16384 6144; do
  $B paged-worker --segment=sv --device=cuda:0 --gpu-budget=4GiB --coordinator=$sock --max-step-seqs=32 --max-step-tokens=4096 --max-step-kv-tokens=$kv --worker-id=w$kv >"$out/worker$kv.log" 2>&1 &
  wp=$!
  for _ in $(seq 300); do grep -q "attached" "$out/worker$kv.log" && break; sleep 0.1; done
  $B serving_bench --server=$sock --clients=32 --prompt-len=128 --gen-len=64 >/dev/null 2>&1
  echo "== worker max-step-kv-tokens=$kv"; $B serving_bench --server=$sock --clients=32 --prompt-len=128 --gen-len=64
  $B pagectl status --server=$sock --json > "$out/status$kv.json"; grep -E "busySeconds|\"steps\"|\"tokens\"" "$out/status$kv.json" | head -6
  grep -E "resident layers|KV cache" "$out/worker$kv.log"
  kill -TERM $wp; wait $wp
done
