#!/usr/bin/env bash
# Installs the dependencies, builds, and runs the whole test suite (CPU; the
# GPU-labelled tests skip where there is no GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/check_format.sh
bash scripts/build.sh
cd build
ctest --output-on-failure -j"$(nproc)"
