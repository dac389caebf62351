#!/usr/bin/env bash
# Installs every build and test dependency of paged from Debian's packages.
# Idempotent and quiet: a machine that has everything installs nothing.
# The CUDA toolkit is not a Debian package here: it is used when present at
# /usr/local/cuda (or wherever nvcc is on PATH) and skipped otherwise.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libboost-dev libabsl-dev nlohmann-json3-dev libicu-dev
  libgtest-dev libgmock-dev
  libhwy-dev
  clang libclang-rt-dev clang-format
  systemd
  curl
  openssl libssl-dev
  python3-grpcio python3-grpc-tools
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]]; then
  echo "install-deps: CUDA toolkit found; the CUDA backend will be built" >&2
else
  echo "install-deps: no CUDA toolkit; building without the CUDA backend" >&2
fi
