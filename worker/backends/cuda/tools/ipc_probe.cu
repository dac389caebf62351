// Probe of CUDA IPC semantics on a host (not part of the build): does memory
// a process exported stay valid in an importer after the exporter exits, and
// what does it cost? Run: ipc_probe export FILE & ipc_probe import FILE
#include <cuda_runtime.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>
#include <vector>

#define CK(x)                                                                                \
  do {                                                                                       \
    cudaError_t e = (x);                                                                     \
    if (e != cudaSuccess) {                                                                  \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e)); \
      std::exit(1);                                                                          \
    }                                                                                        \
  } while (0)

static constexpr size_t kBytes = 256ull << 20;

static double FreeGiB() {
  size_t f = 0, t = 0;
  CK(cudaMemGetInfo(&f, &t));
  return double(f) / double(1ull << 30);
}

static bool Check(void* p, unsigned char want) {
  std::vector<unsigned char> h(kBytes);
  CK(cudaMemcpy(h.data(), p, kBytes, cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < kBytes; i += 4093)
    if (h[i] != want) return false;
  return true;
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  std::string mode = argv[1], file = argv[2];
  CK(cudaSetDevice(0));
  if (mode == "export") {
    void* p = nullptr;
    CK(cudaMalloc(&p, kBytes));
    CK(cudaMemset(p, 0x5A, kBytes));
    CK(cudaDeviceSynchronize());
    cudaIpcMemHandle_t h;
    CK(cudaIpcGetMemHandle(&h, p));
    std::ofstream(file + ".tmp", std::ios::binary).write(reinterpret_cast<char*>(&h), sizeof h);
    std::rename((file + ".tmp").c_str(), file.c_str());
    std::printf("export: pid %d free %.2f GiB\n", getpid(), FreeGiB());
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::seconds(3));
    std::printf("export: exiting\n");
    return 0;
  }
  // import
  while (access(file.c_str(), R_OK) != 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  cudaIpcMemHandle_t h;
  std::ifstream(file, std::ios::binary).read(reinterpret_cast<char*>(&h), sizeof h);
  void* p = nullptr;
  auto t0 = std::chrono::steady_clock::now();
  CK(cudaIpcOpenMemHandle(&p, h, cudaIpcMemLazyEnablePeerAccess));
  double open_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("import: open %.3f ms, pattern %s, free %.2f GiB\n", open_ms,
              Check(p, 0x5A) ? "ok" : "BAD", FreeGiB());
  // D2D bandwidth from the imported pointer.
  void* q = nullptr;
  CK(cudaMalloc(&q, kBytes));
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  CK(cudaEventRecord(a));
  for (int i = 0; i < 10; ++i) CK(cudaMemcpyAsync(q, p, kBytes, cudaMemcpyDeviceToDevice));
  CK(cudaEventRecord(b));
  CK(cudaEventSynchronize(b));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, a, b));
  std::printf("import: d2d from imported %.1f GB/s\n", 10.0 * kBytes / (ms * 1e6));
  std::this_thread::sleep_for(std::chrono::seconds(5));  // exporter has exited
  std::printf("import: after exporter exit, free %.2f GiB\n", FreeGiB());
  cudaError_t e = cudaMemcpy(q, p, kBytes, cudaMemcpyDeviceToDevice);
  std::printf("import: copy after exit: %s\n", cudaGetErrorString(e));
  if (e == cudaSuccess)
    std::printf("import: pattern after exit %s\n", Check(p, 0x5A) ? "ok" : "BAD");
  CK(cudaIpcCloseMemHandle(p));
  std::printf("import: closed, free %.2f GiB\n", FreeGiB());
  return 0;
}
