#!/usr/bin/env bash
# On the GPU machine, from the repository root, with a bundle made by
# scripts/device/make_bundle.sh carried as bundle/: runs the GPU-labelled
# tests and writes logs under $OUT. The bundled test binaries find the sources
# (golden fixtures) and the shared models through PAGED_SOURCE_DIR and
# PAGED_SHARED_MODELS (tests/unit/test_util.h).
set -uo pipefail
out=${OUT:-/tmp/out}
bdir=${BUNDLE:-bundle}
mkdir -p "$out"
export PAGED_SOURCE_DIR=$PWD PAGED_SHARED_MODELS=$PWD/$bdir/models
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
status=0
for t in ${TESTS:-device_gpu_test backend_ops_gpu_test engine_gpu_test block_format_gpu_test share_gpu_test moe_gpu_test gpt_oss_gpu_test}; do
  "$bdir"/run "$t" --gtest_brief=1 >"$out/$t.log" 2>&1 || status=1
  printf '%-24s %s\n' "$t" "$(grep -E '^\[  (PASSED|FAILED)' "$out/$t.log" | tr '\n' ' ')"
done
exit $status
