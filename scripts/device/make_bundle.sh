#!/usr/bin/env bash
# make_bundle.sh [BUILD_DIR [OUT_DIR]]: packs the GPU tests, paged-bench and the tools with their libraries (and
# the shared test models) into bundle/ for the GPU machine (device tool:
# carry ["bundle"]). Needs a CUDA build in build/.
set -euo pipefail
cd "$(dirname "$0")/../.."
b=${1:-build}
o=${2:-bundle}
rm -rf "$o"
../shared/tools/device-bundle.sh "$o" "$b"/tests/engine_gpu_test "$b"/tests/backend_ops_gpu_test "$b"/tests/block_format_gpu_test \
  "$b"/tests/device_gpu_test "$b"/tests/share_gpu_test "$b"/tests/moe_gpu_test "$b"/tests/gpt_oss_gpu_test "$b"/bench/paged-bench "$b"/client/pagectl/pagectl "$b"/store/paged-store \
  "$b"/worker/paged-run "$b"/worker/paged-worker "$b"/daemon/paged "$b"/launcher/paged-up "$b"/bench/serving_bench "$b"/bench/chat_bench \
  "$b"/bench/cpu_matmul_bench
strip --strip-debug "$o"/bin/*
mkdir -p "$o"/models
cp ../shared/models/* "$o"/models/
du -sh "$o"
