#!/usr/bin/env bash
# The multi-turn chat benchmark (issue 16) on the GPU machine, bundle carried
# (scripts/device/make_bundle.sh): USERS conversations over one shared
# SYSTEM_LEN-token system prompt, TURNS turns each (bench/chat_bench.cc), on a
# llama-7b-shaped model of LAYERS layers (f16). One store for the whole run;
# for each mode a fresh coordinator (its prefix cache starts empty) and one
# worker on cuda:0:
#   on    --prefix-cache=true
#   off   --prefix-cache=false
#   omit  --prefix-cache=true, requests carry max_tokens = context - prompt
#         (what an OpenAI request without max_tokens asks); the client cancels
#         each reply after REPLY_LEN tokens
# Each mode first runs a one-turn warm-up of the same shape with another
# seed (another system prompt: nothing of it is reused by the measured run).
# Logs in $OUT/logs.tgz; chat_bench's tables in $OUT/chat.txt; a short table
# last.
#
#   BUNDLE=bundle bash scripts/device/bench_chat.sh
#   LAYERS=32 BUDGET=40GiB KV_GIB=48 bash scripts/device/bench_chat.sh   # the full depth
#   MODEL=m.gguf WEIGHT_FORMAT=f32 DEVICE=cpu BUDGET=256MiB ...           # another model / device
#
# BUDGET defaults to 24 GiB so that every layer and the KV rows stay on the
# GPU: the run measures the scheduler and the prefix cache, not the pager
# (BUDGET=4GiB pages layers and gathers KV from the host every step).
# KV_GIB=16 holds every conversation at its longest without the cache
# (64 x 1536 rows x 128 KiB at 8 layers = 12 GiB).
set -uo pipefail
out=${OUT:-/tmp/out}
bdir=${BUNDLE:-bundle}
B=$bdir/run
layers=${LAYERS:-8}
users=${USERS:-64}
system_len=${SYSTEM_LEN:-1024}
turns=${TURNS:-4}
user_len=${USER_LEN:-64}
reply_len=${REPLY_LEN:-64}
budget=${BUDGET:-24GiB}
kv_gib=${KV_GIB:-16}
step_tokens=${STEP_TOKENS:-4096}
prefill_chunk=${PREFILL_CHUNK:-512}
run_timeout=${RUN_TIMEOUT:-150}  # seconds per chat_bench run
modes=${MODES:-"on off omit"}
device=${DEVICE:-cuda:0}
weight_format=${WEIGHT_FORMAT:-f16}
logs=$out/logs
mkdir -p "$logs"
rm -f "$out/chat.txt"
M=${MODEL:-/tmp/llama7b-$layers}
seg=chat$$
sock=unix:///tmp/paged-chat-$$.sock
pids=()

# shellcheck disable=SC2317  # run by the EXIT trap
finish() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  tar -czf "$out/logs.tgz" -C "$out" logs && rm -rf "$logs"
}
trap finish EXIT
wait_for() {  # FILE PATTERN TENTHS
  for _ in $(seq "$3"); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "timeout waiting for '$2' in $1:"
  tail -n 5 "$1"
  return 1
}
stop() {  # PID: SIGTERM, then SIGKILL after 20 s
  kill -TERM "$1" 2>/dev/null
  for _ in $(seq 200); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null
  wait "$1" 2>/dev/null
}

if [[ -z ${MODEL:-} && ! -f $M/config.json ]]; then  # config.json is written last
  "$B" pagectl make-model --preset=llama-7b --layers="$layers" --out="$M" >"$logs/make.log" 2>&1 ||
    { tail -n 5 "$logs/make.log"; exit 1; }
fi
"$B" paged-store --model="$M" --segment="$seg" --weight-format="$weight_format" --kv-gib="$kv_gib" --remove-on-exit \
  --quiet >"$logs/store.log" 2>&1 &
pids+=("$!")
wait_for "$logs/store.log" ready 3000 || exit 1

chat=(--server="$sock" --users="$users" --system-len="$system_len" --turns="$turns" --user-len="$user_len"
  --reply-len="$reply_len")
failed=0
for mode in $modes; do
  case $mode in
    on) cache=true extra=() ;;
    off) cache=false extra=() ;;
    omit) cache=true extra=(--omit-max-tokens) ;;
    *) echo "unknown mode $mode (on, off, omit)"; exit 2 ;;
  esac
  "$B" paged --segment="$seg" --listen="$sock" --prefix-cache="$cache" --max-seqs-per-step="$users" \
    --max-step-tokens="$step_tokens" --prefill-chunk="$prefill_chunk" >"$logs/coord-$mode.log" 2>&1 &
  coord=$!
  pids+=("$coord")
  wait_for "$logs/coord-$mode.log" "listening on" 300 || exit 1
  "$B" paged-worker --segment="$seg" --device="$device" --gpu-budget="$budget" --coordinator="$sock" \
    --worker-id=gpu0 >"$logs/worker-$mode.log" 2>&1 &
  worker=$!
  pids+=("$worker")
  wait_for "$logs/worker-$mode.log" attached 1200 || exit 1
  timeout "$run_timeout" "$B" chat_bench "${chat[@]}" "${extra[@]}" --turns=1 --seed=977 \
    --label=warmup >"$logs/warmup-$mode.txt" 2>&1 || echo "$mode: warm-up failed (rc $?)"
  timeout "$run_timeout" "$B" chat_bench "${chat[@]}" "${extra[@]}" --label="$mode" \
    >"$logs/chat-$mode.txt" 2>&1
  rc=$?
  ((rc == 0)) || failed=1
  "$B" pagectl status --server="$sock" >"$logs/status-$mode.txt" 2>&1
  stop "$worker"
  stop "$coord"
  {
    echo "== $mode (prefix cache $cache${extra[*]:+, ${extra[*]}}; chat_bench rc $rc)"
    cat "$logs/chat-$mode.txt"
  } | tee -a "$out/chat.txt"
  grep -E "resident layers|KV cache|KV area" "$logs/worker-$mode.log" | head -n 3
done

echo
echo "${MODEL:-llama-7b shape, $layers layers}, $weight_format, $device budget $budget; $users users x $turns turns, system $system_len," \
  "user $user_len, reply $reply_len"
printf '%-6s | %-25s | %-25s | %9s | %8s | %s\n' mode "TTFT ms turn 1 p50/p99" \
  "TTFT ms turns 2-$turns p50/p99" "tok/s" "cached %" errors
for mode in $modes; do
  line=$(grep '^summary' "$out/chat.txt" | grep " label=$mode ")
  if [[ -z $line ]]; then
    printf '%-6s | %s\n' "$mode" "no summary (see chat.txt)"
    continue
  fi
  # summary key=value pairs -> a table row
  echo "$line" | tr ' ' '\n' | awk -F= -v mode="$mode" '
    NF == 2 { v[$1] = $2 }
    END {
      pct = v["prompt_tokens"] > 0 ? 100 * v["cached_prompt_tokens"] / v["prompt_tokens"] : 0
      printf "%-6s | %12s / %-10s | %12s / %-10s | %9s | %8.1f | %s\n", mode,
        v["first_ttft_p50_ms"], v["first_ttft_p99_ms"], v["later_ttft_p50_ms"],
        v["later_ttft_p99_ms"], v["tok_s"], pct, v["errors"]
    }'
done
exit $failed
