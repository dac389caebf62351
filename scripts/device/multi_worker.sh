#!/usr/bin/env bash
# Several workers on one store, on the GPU machine (bundle carried). With one
# GPU (default) two workers share cuda:0; with GPUS=N one worker per GPU.
# Logs under $OUT; prints a short table last.
#
#  1. memory: a llama-7b-shaped model (8 layers, f16). Worker A keeps every
#     layer resident (8 GiB budget); worker B (2 GiB budget) starts next. With
#     sharing, B uses A's layers in place (same GPU) or pages from A's GPU
#     (peer). Device memory per process from nvidia-smi, host memory (RSS,
#     private) from /proc.
#  2. throughput: CLIENTS greedy streams through the coordinator, one worker
#     alone, then all of them (aggregate scaling).
#  3. crash: the stories260K model, two workers, 64 greedy streams; worker A is
#     SIGKILLed mid-run; every stream must equal the undisturbed run.
set -uo pipefail
out=${OUT:-/tmp/out}
bdir=${BUNDLE:-bundle}
B=$bdir/run
gpus=${GPUS:-1}
clients=${CLIENTS:-64}
mkdir -p "$out"
dev() { if ((gpus > 1)); then echo "cuda:$1"; else echo "cuda:0"; fi; }
wait_for() { for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "timeout waiting for '$2' in $1"; return 1; }
gpu_mem() { nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits | awk -v p="$1" -F', ' '$1==p{print $2}'; }
host_mem() { awk '/^Rss:/{r=$2} /^Private_Clean:|^Private_Dirty:/{p+=$2} END{printf "%d/%d", r/1024, p/1024}' /proc/"$1"/smaps_rollup; }

# ---- 1 + 2: the 7B-shaped model -----------------------------------------------
M=/tmp/llama7b-8
$B pagectl make-model --preset=llama-7b --layers=8 --out=$M >"$out/make.log" 2>&1 || exit 1
$B paged-store --model=$M --segment=mw --weight-format=f16 --kv-gib=8 --quiet >"$out/store.log" 2>&1 &
store=$!
wait_for "$out/store.log" ready || exit 1
sock=unix:///tmp/mw.sock
$B paged --segment=mw --listen=$sock --max-seqs-per-step=64 --max-step-tokens=4096 --prefill-chunk=128 \
  >"$out/coord.log" 2>&1 &
coord=$!
wait_for "$out/coord.log" "listening on" || exit 1
common=(--segment=mw --coordinator=$sock --max-step-seqs=64 --max-step-tokens=4096 --max-step-kv-tokens=8192)
$B paged-worker "${common[@]}" --device="$(dev 0)" --worker-id=A --gpu-budget=8GiB --resident=all \
  >"$out/workerA.log" 2>&1 &
wa=$!
wait_for "$out/workerA.log" attached || exit 1
$B serving_bench --server=$sock --clients=$clients --prompt-len=128 --gen-len=64 >/dev/null 2>&1  # warm-up
$B serving_bench --server=$sock --clients=$clients --prompt-len=128 --gen-len=64 >"$out/one.txt" 2>&1
$B paged-worker "${common[@]}" --device="$(dev 1)" --worker-id=B --gpu-budget=2GiB \
  >"$out/workerB.log" 2>&1 &
wb=$!
wait_for "$out/workerB.log" attached || exit 1
sleep 1
memA=$(gpu_mem $wa); memB=$(gpu_mem $wb)
hostA=$(host_mem $wa); hostB=$(host_mem $wb); hostS=$(host_mem $store)
$B serving_bench --server=$sock --clients=$((clients * 2)) --prompt-len=128 --gen-len=64 >/dev/null 2>&1
$B serving_bench --server=$sock --clients=$((clients * 2)) --prompt-len=128 --gen-len=64 >"$out/two.txt" 2>&1
kill -TERM $wb; wait $wb 2>/dev/null
# The peer path on one GPU: worker P copies A's layers device-to-device into
# its slots instead of using them in place, then serves alone after A stops
# (its imports keep A's layers alive).
$B paged-worker "${common[@]}" --device="$(dev 1)" --worker-id=P --gpu-budget=3GiB --shared-in-place=false \
  >"$out/workerP.log" 2>&1 &
wp=$!
wait_for "$out/workerP.log" attached || exit 1
kill -TERM $wa; wait $wa 2>/dev/null
$B serving_bench --server=$sock --clients=$clients --prompt-len=128 --gen-len=64 >/dev/null 2>&1
$B serving_bench --server=$sock --clients=$clients --prompt-len=128 --gen-len=64 >"$out/peer.txt" 2>&1
kill -TERM $wp; wait $wp 2>/dev/null
# B alone with sharing off, for its memory and speed without A.
$B paged-worker "${common[@]}" --device="$(dev 1)" --worker-id=B0 --gpu-budget=3GiB --share=off \
  >"$out/workerB0.log" 2>&1 &
wb0=$!
wait_for "$out/workerB0.log" attached || exit 1
sleep 1
memB0=$(gpu_mem $wb0)
$B serving_bench --server=$sock --clients=$clients --prompt-len=128 --gen-len=64 >/dev/null 2>&1
$B serving_bench --server=$sock --clients=$clients --prompt-len=128 --gen-len=64 >"$out/b0.txt" 2>&1
kill -TERM $wb0; wait $wb0 2>/dev/null
# Scaling over GPUs (GPUS > 1): every worker 4 GiB, paging through its own
# PCIe link (share=off), then with sharing (peer copies where faster).
scale=""
if ((gpus > 1)); then
  for share in off auto; do
    pids=()
    for ((g = 0; g < gpus; g++)); do
      $B paged-worker "${common[@]}" --device=cuda:$g --worker-id=S$g --gpu-budget=4GiB --share=$share \
        >"$out/scale-$share-$g.log" 2>&1 &
      pids+=($!)
      wait_for "$out/scale-$share-$g.log" attached || exit 1
      if ((g == 0)); then
        $B serving_bench --server=$sock --clients=$clients --prompt-len=128 --gen-len=64 >/dev/null 2>&1
        $B serving_bench --server=$sock --clients=$clients --prompt-len=128 --gen-len=64 >"$out/scale-$share-1.txt" 2>&1
      fi
    done
    $B serving_bench --server=$sock --clients=$((clients * gpus)) --prompt-len=128 --gen-len=64 >/dev/null 2>&1
    $B serving_bench --server=$sock --clients=$((clients * gpus)) --prompt-len=128 --gen-len=64 \
      >"$out/scale-$share-$gpus.txt" 2>&1
    kill -TERM "${pids[@]}"; wait "${pids[@]}" 2>/dev/null
    scale+="share=$share: 1 GPU $(awk 'NR==2{print $5}' "$out/scale-$share-1.txt") tok/s, $gpus GPUs $(awk 'NR==2{print $5}' "$out/scale-$share-$gpus.txt") tok/s; "
  done
fi
kill -TERM $coord; wait $coord 2>/dev/null
kill -TERM $store; wait $store 2>/dev/null
shm=$(du -m /dev/shm/mw 2>/dev/null | cut -f1)

# ---- 3: crash with stories260K --------------------------------------------------
$B paged-store --model=$bdir/models/stories260K.gguf --segment=cs --weight-format=f32 --kv-gib=1 --quiet \
  >"$out/cstore.log" 2>&1 &
cstore=$!
wait_for "$out/cstore.log" ready || exit 1
csock=unix:///tmp/cs.sock
$B paged --segment=cs --listen=$csock --max-seqs-per-step=64 >"$out/ccoord.log" 2>&1 &
ccoord=$!
wait_for "$out/ccoord.log" "listening on" || exit 1
start_worker() {
  $B paged-worker --segment=cs --coordinator=$csock --device="$(dev "$2")" --worker-id="$1" --gpu-budget=1GiB \
    --max-step-seqs=32 >"$out/cworker$1.log" 2>&1 &
  echo $!
}
c1=$(start_worker C1 0); c2=$(start_worker C2 1)
wait_for "$out/cworkerC1.log" attached && wait_for "$out/cworkerC2.log" attached || exit 1
cb=(--server=$csock --clients=64 --prompt-len=16 --gen-len=400 --vocab=512)
$B serving_bench "${cb[@]}" --tokens-out="$out/ref.tok" >"$out/cref.txt" 2>&1
$B serving_bench "${cb[@]}" --tokens-out="$out/crash.tok" >"$out/ccrash.txt" 2>&1 &
bench=$!
sleep 0.5
kill -KILL $c1
wait $bench; crash_rc=$?
kill -TERM $c2 $ccoord $cstore; wait 2>/dev/null
if cmp -s "$out/ref.tok" "$out/crash.tok" && ((crash_rc == 0)); then crash=identical; else crash=DIFFERENT; fi

# ---- table -------------------------------------------------------------------------
tps() { awk 'NR==2{print $5}' "$1"; }
{
  echo "== workers: $(grep -h '^sharing' "$out"/workerA.log "$out"/workerB.log | tr '\n' ' ')"
  printf '%-34s %12s %14s\n' "" "GPU MiB" "host RSS/priv MiB"
  printf '%-34s %12s %14s\n' "worker A (8GiB, all resident)" "$memA" "$hostA"
  printf '%-34s %12s %14s\n' "worker B (2GiB, sharing)" "$memB" "$hostB"
  printf '%-34s %12s %14s\n' "worker B alone (3GiB, share=off)" "$memB0" "-"
  printf '%-34s %12s %14s\n' "store (segment $shm MiB in /dev/shm)" "-" "$hostS"
  printf '%-34s %12s\n' "tokens/s: A alone, $clients clients" "$(tps "$out/one.txt")"
  printf '%-34s %12s\n' "tokens/s: A+B, $((clients * 2)) clients" "$(tps "$out/two.txt")"
  printf '%-34s %12s\n' "tokens/s: B alone unshared" "$(tps "$out/b0.txt")"
  printf '%-34s %12s\n' "tokens/s: P alone, D2D from A's" "$(tps "$out/peer.txt")"
  echo "P: $(grep -h '^sharing' "$out/workerP.log")"
  printf '%-34s %12s\n' "crash: 64 streams, A killed" "$crash (rc $crash_rc)"
  [[ -n $scale ]] && echo "scaling: $scale"
} | tee "$out/table.txt"
cd "$out" && tar czf logs.tgz ./*.log ./*.txt ./*.tok 2>/dev/null
