#!/usr/bin/env bash
# The main job, on one machine: installs, builds, makes a model on the spot,
# loads it into a paged-store segment and shows what the segment holds.
# (Generation through the coordinator arrives with the serving issues.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
work=$(mktemp -d)
segment="paged-demo-$$"
trap 'kill "$store_pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
build/client/pagectl/pagectl make-model --preset=tiny --out="$work/model"
build/store/paged-store --model="$work/model" --segment="$segment" --remove-on-exit >"$work/store.log" 2>&1 &
store_pid=$!
for _ in $(seq 100); do grep -q ready "$work/store.log" && break; sleep 0.1; done
cat "$work/store.log"
build/client/pagectl/pagectl inspect --segment="$segment"
build/client/pagectl/pagectl verify --segment="$segment"
# Generation, in-process (the serving path through the coordinator comes with
# its issue): the random model gives token ids, the real stories260K gives text.
build/worker/paged-run --model="$work/model" --prompt-tokens=1,2,3 -n 16 --tokens
if [[ -f ../shared/models/stories260K.gguf ]]; then
  build/worker/paged-run --model=../shared/models/stories260K.gguf --prompt="Once upon a time" -n 120
fi
