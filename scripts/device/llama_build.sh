# Sourced by the side-by-side scripts on the GPU machine: llama.cpp (a
# baseline only, never part of paged) from .device/llama-src.tar.xz, the
# source of the npm package node-llama-cpp (pin 3.21.1), unpacked into
# /tmp/llama and built for sm_90 in the background (about 190 s).
# start_llama_build LOG: sets build_pid; `wait $build_pid` before using
# /tmp/llama/build/bin (llama-bench, llama-batched-bench, llama-quantize).
start_llama_build() {
  mkdir -p /tmp/llama && tar -xJf .device/llama-src.tar.xz -C /tmp/llama
  (cd /tmp/llama && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null &&
    cmake --build build -j16 --target llama-bench llama-batched-bench llama-quantize) \
    >"$1" 2>&1 &
  build_pid=$!
}
