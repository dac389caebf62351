#!/usr/bin/env bash
# Runs the CUDA backend's op tests, timings and a memcheck pass on the GPU
# machine, from a bundle made here:
#   cmake --build build-cuda --target backend_ops_gpu_test
#   /work/shared/tools/device-bundle.sh bundle-cuda build-cuda/tests/backend_ops_gpu_test
# then (device tool, carry bundle-cuda): worker/backends/cuda/tools/device_check.sh
# Logs go to $OUT (or ./device-logs); the summary lines are printed.
set -uo pipefail
bundle=${BUNDLE:-bundle-cuda}
out=${OUT:-device-logs}
mkdir -p "$out"
export LD_LIBRARY_PATH="$PWD/$bundle/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
bin="$bundle/bin/backend_ops_gpu_test"
summary='^\[  (FAILED|PASSED|SKIPPED|       OK) |Failure|error|Expected|Which is|got |TIMING|ERROR SUMMARY|^vocab '

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
echo "== tests"
timeout "${TEST_TIMEOUT:-240}" "$bin" ${TEST_ARGS:-} 2>&1 | tee "$out/test.log" | grep -E "$summary"
echo "== timings"
timeout "${TIMING_TIMEOUT:-150}" "$bin" --gtest_also_run_disabled_tests --gtest_filter='*PrintTimings*' \
  2>&1 | tee "$out/timing.log" | grep -E "TIMING|FAILED|Failure"
echo "== memcheck"
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
PAGED_CUDA_SYNC=1 timeout "${MEMCHECK_TIMEOUT:-120}" "$sanitizer" --tool memcheck "$bin" \
  --gtest_filter="${MEMCHECK_FILTER:--*LargerThanOneChunk*:*Timing*}" \
  2>&1 | tee "$out/memcheck.log" | grep -E "$summary" | tail -30
echo "== racecheck"
timeout "${RACECHECK_TIMEOUT:-90}" "$sanitizer" --tool racecheck "$bin" \
  --gtest_filter="${RACECHECK_FILTER:-AttentionGpuTest.SmallBatch:SamplingGpuTest.SameSeed*}" \
  2>&1 | tee "$out/racecheck.log" | grep -E "$summary|hazard" | tail -30
echo "== done"
