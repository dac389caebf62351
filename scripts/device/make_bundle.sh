#!/usr/bin/env bash
# Packs the GPU tests, paged-bench and the tools with their libraries (and
# the shared test models) into bundle/ for the GPU machine (device tool:
# carry ["bundle"]). Needs a CUDA build in build/.
set -euo pipefail
cd "$(dirname "$0")/../.."
b=${1:-build}
rm -rf bundle
/work/shared/tools/device-bundle.sh bundle "$b"/tests/engine_gpu_test "$b"/tests/backend_ops_gpu_test \
  "$b"/tests/device_gpu_test "$b"/bench/paged-bench "$b"/client/pagectl/pagectl "$b"/store/paged-store \
  "$b"/worker/paged-run "$b"/worker/paged-worker
strip --strip-debug bundle/bin/*
mkdir -p bundle/models
cp ../shared/models/* bundle/models/
du -sh bundle
