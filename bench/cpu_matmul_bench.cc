// Throughput of the CPU executor's matrix products (worker/backends/cpu_exec)
// on the shapes of a llama-7b layer, for every weight dtype (the store's own
// and the ggml block formats a GGUF file keeps) and a few batch sizes: weight
// bytes read per second, GFLOP/s, and the fraction of the
// machine's read bandwidth, measured here with the same threads (a streaming
// read of a buffer far larger than the caches). The scalar reference
// paged::cpu::MatMul runs one shape for comparison. Each point cycles
// through enough copies of the matrix (--footprint-mb) that its weights come
// from DRAM, as a decode step's do.
//
//   cpu_matmul_bench [--threads N] [--pin none|all|0-7] [--seconds S]
//                    [--dtypes f32,f16,bf16,int8,int4|blocks|q4_k,...]
//                    [--batches 1,2,4,8,64] [--shapes 4096x4096,...] [--reference]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_split.h"
#include "common/block_quant.h"
#include "common/cli.h"
#include "common/dtype.h"
#include "common/quant.h"
#include "worker/backends/cpu/cpu_kernels.h"
#include "worker/backends/cpu/thread_pool.h"
#include "worker/backends/cpu_exec/attention.h"
#include "worker/backends/cpu_exec/exec_pool.h"
#include "worker/backends/cpu_exec/matmul.h"

ABSL_FLAG(int, threads, 0, "threads, the caller included (0: all cores)");
ABSL_FLAG(std::string, pin, "none", "CPUs to pin the threads to: none, all or a list (0-7,16)");
ABSL_FLAG(double, seconds, 0.5, "measuring time per point");
ABSL_FLAG(std::string, dtypes, "f32,f16,bf16,int8,int4",
          "weight dtypes: names (f32, int4, q4_k, iq4_xs, mxfp4, ...) or `blocks` for every ggml "
          "block format");
ABSL_FLAG(std::string, batches, "1,2,4,8,64", "token rows per call");
ABSL_FLAG(int, footprint_mb, 512, "weight bytes cycled through per point (well above the L3)");
ABSL_FLAG(std::string, shapes, "4096x4096,11008x4096,4096x11008",
          "matrices, rows x cols (the block formats need cols a multiple of 256)");
ABSL_FLAG(
    std::string, activations, "f32",
    "activations of the products: f32, q8 (8 bits per block of 256 for q4_k / q5_k / q6_k), or "
    "both (each format's rows twice)");
ABSL_FLAG(bool, reference, true, "also time the scalar reference on the first shape");
ABSL_FLAG(std::string, attention, "",
          "instead of the products, decode attention at these contexts (128,1024,...): the "
          "executor's kernel against the reference, f16 KV, llama-7b's heads (32 of 128) and "
          "llama-3-8b's (32 over 8), batches 1 and 8");

namespace paged {
namespace {

using Clock = std::chrono::steady_clock;

struct Shape {
  int64_t rows, cols;
};

// Copies of one matrix in one allocation, filled with valid random values.
class WeightCopies {
 public:
  WeightCopies(DType t, Shape s, uint64_t footprint) {
    group_ = t == DType::kI8 ? kDefaultInt8Group : t == DType::kI4 ? kDefaultInt4Group : 0;
    payload_ = PayloadBytes(t, uint64_t(s.rows), uint64_t(s.cols));
    scale_bytes_ = IsQuantized(t) ? uint64_t(s.rows * GroupsPerRow(s.cols, group_)) * 2 : 0;
    const uint64_t each = payload_ + scale_bytes_;
    copies_ = int(std::max<uint64_t>(1, (footprint + each - 1) / each));
    mem_.reset(new uint8_t[each * uint64_t(copies_)]);
    Fill(t, mem_.get(), payload_ * uint64_t(copies_), false);
    if (IsBlockFormat(t)) FixBlockScales(t, mem_.get(), payload_ * uint64_t(copies_));
    if (scale_bytes_) Fill(t, mem_.get() + payload_ * copies_, scale_bytes_ * copies_, true);
    for (int k = 0; k < copies_; ++k) {
      WeightRef w;
      w.dtype = t;
      w.rows = s.rows;
      w.cols = s.cols;
      w.group = group_;
      w.data = mem_.get() + payload_ * uint64_t(k);
      w.scales = scale_bytes_ ? mem_.get() + payload_ * copies_ + scale_bytes_ * k : nullptr;
      refs_.push_back(w);
    }
  }

  int copies() const { return copies_; }
  const WeightRef& copy(int k) const { return refs_[size_t(k)]; }
  uint64_t bytes() const { return payload_ + scale_bytes_; }  // one copy

 private:
  // Values from small tables of normal samples, so that no NaN or subnormal
  // slows a path down; int8 / int4 payloads are any bytes.
  static void Fill(DType t, uint8_t* p, uint64_t bytes, bool scales) {
    std::mt19937 rng(42);
    std::normal_distribution<float> dist(0.f, 1.f);
    std::vector<uint32_t> table(4096);
    for (uint32_t& v : table) {
      const float f = scales ? 0.01f * (1.f + std::fabs(dist(rng))) : dist(rng);
      v = t == DType::kF32 && !scales    ? BitsFromF32(f)
          : t == DType::kBF16 && !scales ? FloatToBf16(f)
                                         : FloatToHalf(f);
    }
    uint64_t x = 0x9e3779b97f4a7c15ull;
    auto next = [&x] {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      return x;
    };
    const bool raw = !scales && (IsQuantized(t) || IsBlockFormat(t));
    const size_t width = raw ? 8 : (t == DType::kF32 && !scales ? 4 : 2);
    for (uint64_t i = 0; i + width <= bytes; i += width) {
      const uint64_t r = next();
      if (raw) {
        std::memcpy(p + i, &r, 8);
      } else {
        const uint32_t v = table[r % table.size()];
        std::memcpy(p + i, &v, width);
      }
    }
  }

  // Block formats: random bytes, then each block's f16 scales from the table
  // of small normal values, and mxfp4 exponents near 1 (2^-8 .. 2^7).
  static void FixBlockScales(DType t, uint8_t* p, uint64_t bytes) {
    std::mt19937 rng(43);
    std::normal_distribution<float> dist(0.f, 1.f);
    std::vector<uint16_t> table(4096);
    for (uint16_t& v : table) v = FloatToHalf(0.01f * (1.f + std::fabs(dist(rng))));
    const std::vector<int> fields = BlockHalfFields(t);
    const uint64_t bb = uint64_t(BlockBytes(t));
    for (uint64_t b = 0, k = 0; b + bb <= bytes; b += bb, ++k) {
      for (int off : fields) std::memcpy(p + b + off, &table[(k * 7 + uint64_t(off)) % 4096], 2);
      if (t == DType::kMXFP4) p[b] = uint8_t(120 + k % 16);
    }
  }

  int group_ = 0;
  uint64_t payload_ = 0, scale_bytes_ = 0;
  int copies_ = 1;
  std::unique_ptr<uint8_t[]> mem_;
  std::vector<WeightRef> refs_;
};

// Calls fn(k) for k = 0, 1, ... (cycling the copies) for `seconds` in all,
// after one warm-up call, in 3 rounds; returns the seconds per call of the
// fastest round (the machine's noise only ever slows a round down).
template <class Fn>
double TimePerCall(double seconds, int copies, const Fn& fn) {
  fn(0);
  double best = 1e30;
  int64_t calls = 0;
  for (int round = 0; round < 3; ++round) {
    const auto t0 = Clock::now();
    int64_t round_calls = 0;
    double elapsed = 0;
    do {
      fn(int(++calls % copies));
      ++round_calls;
      elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    } while (elapsed < seconds / 3 || round_calls < 2);
    best = std::min(best, elapsed / double(round_calls));
  }
  return best;
}

// GB/s of a streaming read of `bytes` over the pool's threads (SumFloats: 4
// streams per chunk, like a tile of 4 weight rows).
double ReadBandwidth(cpu_exec::ExecPool& pool, uint64_t bytes, double seconds) {
  const int64_t count = int64_t(bytes / sizeof(float));
  // Distinct values: pages of one repeated value may be merged by the host
  // (KSM) and read from cache.
  std::vector<float> buf(static_cast<size_t>(count));
  uint64_t state = 0x9e3779b97f4a7c15ull;
  for (float& f : buf) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    f = float(state >> 40) * 1e-6f;
  }
  std::vector<float> sink(1024, 0.f);
  const double per = TimePerCall(seconds, 1, [&](int) {
    pool.ParallelFor(0, count, int64_t{1} << 16, [&](int64_t lo, int64_t hi) {
      sink[size_t(lo >> 16) % sink.size()] += cpu_exec::SumFloats(buf.data() + lo, hi - lo);
    });
  });
  if (sink[0] == 12345.f) std::printf(" ");  // keep the sums alive
  return double(bytes) / per / 1e9;
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown CPU";
}

// Decode attention (one new row per sequence) at each context: the
// executor's kernel and the reference, us per call and GB/s of K and V read.
int AttentionMain(cpu_exec::ExecPool& pool, ThreadPool& ref_pool, double seconds) {
  std::vector<int> contexts;
  for (const std::string& c :
       std::vector<std::string>(absl::StrSplit(absl::GetFlag(FLAGS_attention), ','))) {
    const int ctx = std::atoi(c.c_str());
    if (ctx <= 0) {
      std::fprintf(stderr, "cpu_matmul_bench: bad context '%s'\n", c.c_str());
      return 2;
    }
    contexts.push_back(ctx);
  }
  std::printf("%-34s %6s %4s %11s %9s %13s %8s\n", "attention (f16 KV)", "ctx", "n", "exec us",
              "GB/s", "reference us", "speedup");
  std::mt19937 rng(9);
  std::normal_distribution<float> dist(0.f, 1.f);
  struct Heads {
    const char* name;
    int heads, kv_heads, hd;
  };
  for (const Heads& h :
       {Heads{"llama-7b 32/32 hd128", 32, 32, 128}, Heads{"llama-3-8b 32/8 hd128", 32, 8, 128}}) {
    for (int n : {1, 8}) {
      for (int ctx : contexts) {
        const int bt = 16, per_seq = (ctx + bt - 1) / bt, kv_dim = h.kv_heads * h.hd;
        const uint64_t block_bytes = 2ull * bt * kv_dim * 2;
        std::vector<uint16_t> pool_mem(block_bytes / 2 * per_seq * n);
        for (uint16_t& v : pool_mem) v = FloatToHalf(dist(rng));
        const KvLayerView kv{pool_mem.data(), DType::kF16, bt,
                             kv_dim,          block_bytes, uint64_t(per_seq * n)};
        std::vector<AttnSeq> seqs;
        std::vector<int32_t> tables(size_t(per_seq * n));
        std::iota(tables.begin(), tables.end(), 0);
        for (int i = 0; i < n; ++i) seqs.push_back(AttnSeq{i, 1, ctx - 1, i * per_seq});
        std::vector<float> q(size_t(n) * h.heads * h.hd), out(q.size());
        for (float& v : q) v = 0.5f * dist(rng);
        AttnParams p;
        p.decode_rows = true;
        const double exec = TimePerCall(seconds, 1, [&](int) {
          cpu_exec::Attention(pool, q.data(), seqs.data(), n, tables.data(), h.heads, h.kv_heads,
                              h.hd, ctx, kv, p, out.data());
        });
        const double ref = TimePerCall(seconds, 1, [&](int) {
          cpu::Attention(ref_pool, q.data(), seqs.data(), n, tables.data(), h.heads, h.kv_heads,
                         h.hd, ctx, kv, p, out.data());
        });
        const double bytes = 2.0 * ctx * kv_dim * 2 * n;
        std::printf("%-34s %6d %4d %11.1f %9.1f %13.1f %7.1fx\n", h.name, ctx, n, exec * 1e6,
                    bytes / exec / 1e9, ref * 1e6, ref / exec);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

int Main() {
  auto cpus = cpu_exec::ParseCpuList(absl::GetFlag(FLAGS_pin));
  if (!cpus.ok()) {
    std::fprintf(stderr, "cpu_matmul_bench: %s\n", std::string(cpus.status().message()).c_str());
    return 2;
  }
  std::vector<DType> dtypes;
  for (const std::string& name :
       std::vector<std::string>(absl::StrSplit(absl::GetFlag(FLAGS_dtypes), ','))) {
    if (name == "blocks") {
      dtypes.insert(dtypes.end(), std::begin(kBlockFormats), std::end(kBlockFormats));
      continue;
    }
    auto t = ParseDType(name);
    if (!t.ok()) {
      std::fprintf(stderr, "cpu_matmul_bench: %s\n", std::string(t.status().message()).c_str());
      return 2;
    }
    dtypes.push_back(*t);
  }
  std::vector<Shape> shapes;
  for (const std::string& sh :
       std::vector<std::string>(absl::StrSplit(absl::GetFlag(FLAGS_shapes), ','))) {
    Shape shape{0, 0};
    if (std::sscanf(sh.c_str(), "%ldx%ld", &shape.rows, &shape.cols) != 2 || shape.rows <= 0 ||
        shape.cols <= 0) {
      std::fprintf(stderr, "cpu_matmul_bench: bad shape '%s' (want ROWSxCOLS)\n", sh.c_str());
      return 2;
    }
    for (DType t : dtypes) {
      if (!RowFits(t, shape.cols)) {
        std::fprintf(stderr, "cpu_matmul_bench: %s rows of %ld values are not whole blocks\n",
                     std::string(DTypeName(t)).c_str(), shape.cols);
        return 2;
      }
    }
    shapes.push_back(shape);
  }
  std::vector<int> batches;
  for (const std::string& b :
       std::vector<std::string>(absl::StrSplit(absl::GetFlag(FLAGS_batches), ','))) {
    batches.push_back(std::max(1, std::atoi(b.c_str())));
  }
  const double seconds = absl::GetFlag(FLAGS_seconds);
  const uint64_t footprint = uint64_t(std::max(1, absl::GetFlag(FLAGS_footprint_mb))) << 20;

  cpu_exec::ExecPoolOptions opts;
  opts.threads = absl::GetFlag(FLAGS_threads);
  opts.cpus = *cpus;
  const std::string activations = absl::GetFlag(FLAGS_activations);
  if (activations != "f32" && activations != "q8" && activations != "both") {
    std::fprintf(stderr, "cpu_matmul_bench: --activations is f32, q8 or both, not %s\n",
                 activations.c_str());
    return 2;
  }
  cpu_exec::ExecPool pool(opts);
  cpu_exec::ExecPoolOptions q8_opts = opts;
  q8_opts.q8_activations = true;
  cpu_exec::ExecPool q8_pool(q8_opts);
  if (!cpus->empty() && !cpu_exec::PinCurrentThread((*cpus)[0])) opts.cpus.clear();
  const bool pinned = !cpus->empty() && pool.pinned() && !opts.cpus.empty();
  ThreadPool ref_pool(pool.size());

  if (!absl::GetFlag(FLAGS_attention).empty()) return AttentionMain(pool, ref_pool, seconds);
  const double bw = ReadBandwidth(pool, footprint, std::max(seconds, 1.0));
  std::printf("%s | target %s | %d threads%s | read bandwidth %.1f GB/s (%d MiB streamed)\n",
              CpuModel().c_str(), cpu_exec::TargetName().c_str(), pool.size(),
              pinned ? ", pinned" : "", bw, int(footprint >> 20));
  std::printf("%-22s %-12s %4s %10s %9s %9s %7s\n", "kernel", "rows x cols", "n", "us/call", "GB/s",
              "GFLOP/s", "of bw");

  const int max_n = *std::max_element(batches.begin(), batches.end());
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.f, 1.f);
  int64_t widest = 0;
  for (const Shape& s : shapes) widest = std::max({widest, s.rows, s.cols});
  std::vector<float> x(size_t(max_n * widest)), out(size_t(max_n * widest));
  for (float& v : x) v = dist(rng);

  auto report = [&](const std::string& kernel, Shape s, int n, double per, uint64_t bytes) {
    const double gbs = double(bytes) / per / 1e9;
    const double gflops = 2.0 * double(n) * double(s.rows) * double(s.cols) / per / 1e9;
    std::printf("%-22s %5lldx%-6lld %4d %10.1f %9.1f %9.1f %6.0f%%\n", kernel.c_str(),
                (long long)s.rows, (long long)s.cols, n, per * 1e6, gbs, gflops, 100 * gbs / bw);
    std::fflush(stdout);
  };

  std::vector<bool> modes;  // q8 activations or not
  if (activations != "q8") modes.push_back(false);
  if (activations != "f32") modes.push_back(true);
  for (DType t : dtypes) {
    for (const Shape& s : shapes) {
      const WeightCopies w(t, s, footprint);
      for (bool q8 : modes) {
        const std::string name = "cpu_exec " + std::string(DTypeName(t)) + (q8 ? " q8" : "");
        cpu_exec::ExecPool& p = q8 ? q8_pool : pool;
        for (int n : batches) {
          const double per = TimePerCall(seconds, w.copies(), [&](int k) {
            cpu_exec::MatMul(p, x.data(), n, w.copy(k), 0, s.rows, nullptr, out.data(), s.rows);
          });
          report(name, s, n, per, w.bytes());
        }
      }
    }
  }
  // The scalar reference on one shape.
  for (DType t : absl::GetFlag(FLAGS_reference) ? dtypes : std::vector<DType>{}) {
    const Shape s = shapes[0];
    const WeightCopies w(t, s, footprint);
    for (int n : {1, 8}) {
      const double per = TimePerCall(seconds, w.copies(), [&](int k) {
        cpu::MatMul(ref_pool, x.data(), n, w.copy(k), nullptr, out.data());
      });
      report("reference " + std::string(DTypeName(t)), s, n, per, w.bytes());
    }
  }
  return 0;
}

}  // namespace
}  // namespace paged

int main(int argc, char** argv) {
  paged::ParseFlags(argc, argv,
                    "cpu_matmul_bench [--threads N] [--pin none|all|LIST] [--seconds S] "
                    "[--dtypes f32,f16,...|blocks] [--batches 1,2,4,8,64] [--shapes RxC,...] "
                    "[--reference] [--attention 128,1024,...]");
  return paged::Main();
}
