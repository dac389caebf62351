#!/usr/bin/env bash
# Do the host executor and the link share one DRAM budget? (issue 12: the
# split's bound assumes their bandwidths add.) On the GPU machine, from the
# repository root, carry .device (bundle.tar.xz):
#   1. the CPU executor's f16 GEMV alone (cpu_matmul_bench, all cores, 2 GB of
#      weights cycled, batch 1);
#   2. pinned host-to-device copies alone (torch, 2 GiB a copy);
#   3. both at once: the copies run through the GEMV's measurement.
# Then backend_ops_gpu_test's products and its int GEMV timings. One log:
# $OUT/dram.txt. About 3.5 minutes (the first three parts: 1.5).
set -uo pipefail
final=${OUT:-/tmp/out}
log=$final/dram.txt
[[ -d bundle ]] || tar -xJf .device/bundle.tar.xz
cat >/tmp/h2d.py <<'PY'
import sys, time, torch
secs = float(sys.argv[1])
src = torch.empty(2 << 30, dtype=torch.uint8).pin_memory()
dst = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
dst.copy_(src, non_blocking=True); torch.cuda.synchronize()
n, t0 = 0, time.time()
while time.time() - t0 < secs:
    dst.copy_(src, non_blocking=True); torch.cuda.synchronize(); n += 1
dt = time.time() - t0
print(f"H2D pinned: {n * src.numel() / dt / 1e9:.1f} GB/s over {dt:.1f} s", flush=True)
PY
gemv() {
  bundle/run cpu_matmul_bench --dtypes=f16 --batches=1 --shapes=11008x4096 --footprint-mb=2048 \
    --seconds=4 --reference=false 2>&1 | grep -iE "f16|GB/s|read" | head -6
}
{
  nvidia-smi --query-gpu=name --format=csv,noheader
  echo "== 1. host GEMV alone"
  gemv
  echo "== 2. copies alone"
  python3 /tmp/h2d.py 6
  echo "== 3. both at once (copies for 25 s, the GEMV inside them)"
  python3 /tmp/h2d.py 25 &
  sleep 3
  gemv
  wait
  echo "== the products' GPU tests, then the int GEMV timings"
  export PAGED_SOURCE_DIR=$PWD PAGED_SHARED_MODELS=$PWD/bundle/models
  bundle/run backend_ops_gpu_test --gtest_brief=1 --gtest_filter='*MatMul*' 2>&1 | tail -3
  timeout 90 bundle/run backend_ops_gpu_test --gtest_also_run_disabled_tests \
    --gtest_filter='TimingGpuTest.DISABLED_PrintTimings' 2>&1 | grep "TIMING gemv int"
} 2>&1 | tee "$log"
