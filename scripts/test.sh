#!/usr/bin/env bash
# Installs the dependencies, builds, and runs the whole test suite (CPU; the
# GPU-labelled tests skip where there is no GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/check_format.sh
# CI builds a fresh clone and throws it away: the same -O2 code, without the
# debug info that is a quarter to a third of its compile time (CMakeLists.txt).
if [[ "${CI:-}" == true ]]; then
  bash scripts/build.sh -DPAGED_DEBUG_INFO=OFF
else
  bash scripts/build.sh
fi
cd build
ctest --output-on-failure -j"$(nproc)"
