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
# Without what the build of llama-bench, llama-batched-bench and
# llama-quantize does not read (vocab models, docs, the web UI, other
# backends, tests): 5 MB instead of 25, so it fits the device's 64 MiB carry
# beside the paged bundle.
(cd "$work/llama.cpp" && git archive --format=tar HEAD -- . ':!models' ':!docs' ':!tools/ui' \
  ':!ggml/src/ggml-hexagon' ':!ggml/src/ggml-sycl' ':!ggml/src/ggml-vulkan' \
  ':!ggml/src/ggml-opencl' ':!benches' ':!media' ':!tests') | xz -T2 -6 > .device/llama-src.tar.xz
ls -la .device/llama-src.tar.xz
