#!/usr/bin/env bash
# Makes .device/llama-src.tar.xz: the llama.cpp source that ships inside the
# npm package node-llama-cpp (pinned), for scripts/device/side_by_side.sh.
# llama.cpp is a baseline and an oracle, never part of paged: it stays out
# of git (.device/ is ignored).
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${LLAMA_WORK:-/tmp/llama-npm}
mkdir -p "$work" .device
if [[ ! -d $work/llama.cpp ]]; then
  (cd "$work" && npm i -E node-llama-cpp@3.21.1 --ignore-scripts >/dev/null &&
    git clone -q node_modules/node-llama-cpp/llama/gitRelease.bundle llama.cpp)
fi
(cd "$work/llama.cpp" && git archive --format=tar HEAD) | xz -T2 -6 > .device/llama-src.tar.xz
ls -la .device/llama-src.tar.xz
