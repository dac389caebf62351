#!/usr/bin/env bash
# The main job, on one machine: installs, builds, makes a model on the spot
# and shows how the store lays it out, then starts paged (store, coordinator,
# one worker per GPU or a CPU worker) with paged-up and generates text
# through the gRPC API.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
b=build
work=$(mktemp -d)
up_pid=""
trap '[[ -n "$up_pid" ]] && kill "$up_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"' EXIT

$b/client/pagectl/pagectl make-model --preset=tiny --out="$work/model"
$b/client/pagectl/pagectl inspect --model="$work/model"

# A real trained model gives real text; without it, the random model serves
# token ids.
model=../shared/models/stories260K.gguf
prompt=(--prompt="Once upon a time")
if [[ ! -f $model ]]; then model=$work/model; prompt=(--prompt-tokens=1,2,3); fi
addr="unix://$work/paged.sock"
$b/launcher/paged-up --model="$model" --weight-format=f32 --kv-gib=0.05 --listen="$addr" \
  --segment="paged-demo-$$" --remove-segment >"$work/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 600); do grep -q "paged is up" "$work/up.log" && break; sleep 0.1; done
grep "paged is up" "$work/up.log" || { cat "$work/up.log"; exit 1; }
$b/client/pagectl/pagectl generate --server="$addr" "${prompt[@]}" -n 120
$b/client/pagectl/pagectl status --server="$addr"
