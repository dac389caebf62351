#!/usr/bin/env bash
# The GGUF fixtures served as stored through paged-up on the GPU (and the
# CPU), against llama.cpp's greedy continuation of the same prompt
# (tests/golden/gguf/llama_logits.json, "greedy"). On the GPU machine with a
# bundle carried; logs under $OUT; a table last.
set -uo pipefail
out=${OUT:-/tmp/out}
bdir=${BUNDLE:-bundle}
B=$bdir/run
dir=tests/golden/gguf
devices=${DEVICES:-"cuda:0 cpu"}
sock=unix:///tmp/paged-gguf.sock
status=0
table=""
for dev in $devices; do
  for f in $(python3 -c "import json; print(' '.join(json.load(open('$dir/llama_logits.json'))['greedy']))"); do
    name=${f%.gguf}-${dev//:/}
    seg=gg-$$-${name}
    timeout 120 $B paged-up --model=$dir/$f --segment=$seg --weight-format=native --kv-gib=0.01 \
      --device=$dev --workers=1 --listen=$sock --remove-segment --start-timeout=60 --stop-timeout=5 \
      >"$out/up-$name.log" 2>&1 &
    up=$!
    for _ in $(seq 600); do grep -q "paged is up" "$out/up-$name.log" && break; sleep 0.1; done
    # llama.cpp's greedy tokens on the quantized file; where its int8
    # activations make those differ from its run on the same weights
    # dequantized to f32 (near-tied logits of a random model), the latter:
    # paged computes with exact activations.
    read -r ids n want oracle < <(python3 -c "
import json; j=json.load(open('$dir/llama_logits.json')); g=j['greedy']['$f']
w, o = (g['quantized'], 'quantized') if g['quantized'] == g['dequantized'] else (g['dequantized'], 'dequantized')
print(','.join(map(str,j['greedy_prompt'])), len(w), ','.join(map(str,w)), o)")
    $B pagectl generate --server=$sock --prompt-tokens="$ids" -n "$n" --ignore-eos --json >"$out/gen-$name.json" 2>&1
    got=$(python3 -c "import json; print(','.join(map(str, json.load(open('$out/gen-$name.json'))['token_ids'])))" 2>/dev/null)
    if [[ "$got" == "$want" ]]; then verdict=same; else verdict=DIFFERENT; status=1; fi
    table+=$(printf '%-22s %-7s %-9s (%s tokens, llama.cpp on the %s weights)' "$f" "$dev" "$verdict" "$n" "$oracle")$'\n'
    kill -TERM $up 2>/dev/null; wait $up 2>/dev/null
  done
done
printf 'file                   device  greedy tokens vs llama.cpp\n%s' "$table"
exit $status
