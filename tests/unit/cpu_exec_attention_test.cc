// The CPU executor's attention (worker/backends/cpu_exec/attention.h, what
// --device=cpu runs) against the scalar reference (cpu::Attention) on the
// same KV pool, written by the reference's KvWrite into scattered blocks:
//   - every KV dtype, head_dims from 6 to 256 (f32, f16 and bf16 ones
//     short of whole vectors too), 1 to 8 query heads a kv head, prefill
//     chunks and decode rows of several sequences,
//     a sliding window, gemma's scale and soft-cap, gpt-oss's sinks, on every
//     SIMD target this CPU runs: within 2e-5 of the reference relative to
//     the output's largest value (the sums' order and Highway's exp differ);
//   - the same bits whatever the thread count and whatever else is in the
//     batch;
//   - bad shapes and dtypes are refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "tests/unit/cpu_exec_test_util.h"
#include "worker/backends/cpu/cpu_kernels.h"
#include "worker/backends/cpu/thread_pool.h"
#include "worker/backends/cpu_exec/attention.h"
#include "worker/backends/cpu_exec/exec_pool.h"
#include "worker/backends/cpu_exec/matmul.h"

namespace paged::cpu_exec {
namespace {

using paged::testing::ExpectSameBits;
using paged::testing::RandomVector;

struct Shape {
  int heads, kv_heads, hd;
  DType kv;
};

std::string Name(const Shape& s) {
  return std::to_string(s.heads) + "/" + std::to_string(s.kv_heads) + " hd" + std::to_string(s.hd) +
         " " + std::string(DTypeName(s.kv));
}

struct Spec {
  int start_pos, n_new;
};

// A step's attention inputs: the KV pool of every sequence's context
// [0, start_pos + n_new), written by the reference, in shuffled blocks.
struct Step {
  std::vector<uint8_t> pool;
  KvLayerView kv;
  std::vector<AttnSeq> seqs;
  std::vector<int32_t> tables;
  std::vector<float> q;
  int rows = 0, max_ctx = 0;
};

Step MakeStep(const Shape& s, const std::vector<Spec>& specs, std::mt19937& rng) {
  Step st;
  const int bt = 16, kv_dim = s.kv_heads * s.hd;
  int blocks = 0;
  for (const Spec& q : specs) {
    blocks += (q.start_pos + q.n_new + bt - 1) / bt;
    st.max_ctx = std::max(st.max_ctx, q.start_pos + q.n_new);
  }
  blocks += 3;
  const uint64_t block_bytes = 2ull * bt * kv_dim * (s.kv == DType::kF32 ? 4 : 2);
  st.pool.assign(block_bytes * blocks, 0);
  st.kv = KvLayerView{st.pool.data(), s.kv, bt, kv_dim, block_bytes, uint64_t(blocks)};
  std::vector<int32_t> ids(static_cast<size_t>(blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<int32_t> slots;
  for (const Spec& q : specs) {
    const int ctx = q.start_pos + q.n_new;
    st.seqs.push_back(AttnSeq{st.rows, q.n_new, q.start_pos, int32_t(st.tables.size())});
    const size_t first = st.tables.size();
    for (int b = 0; b < (ctx + bt - 1) / bt; ++b) st.tables.push_back(ids[st.tables.size()]);
    for (int p = 0; p < ctx; ++p) slots.push_back(st.tables[first + p / bt] * bt + p % bt);
    st.rows += q.n_new;
  }
  const std::vector<float> k = RandomVector(rng, slots.size() * kv_dim);
  const std::vector<float> v = RandomVector(rng, slots.size() * kv_dim);
  cpu::KvWrite(k.data(), v.data(), slots.data(), int(slots.size()), st.kv);
  st.q = RandomVector(rng, size_t(st.rows) * s.heads * s.hd);
  for (float& x : st.q) x *= 0.5f;
  return st;
}

std::vector<float> Reference(const Step& st, const Shape& s, const AttnParams& p) {
  ThreadPool pool(1);
  std::vector<float> out(st.q.size(), -1.f);
  cpu::Attention(pool, st.q.data(), st.seqs.data(), int(st.seqs.size()), st.tables.data(), s.heads,
                 s.kv_heads, s.hd, st.max_ctx, st.kv, p, out.data());
  return out;
}

std::vector<float> Executor(ExecPool& pool, const Step& st, const Shape& s, const AttnParams& p) {
  std::vector<float> out(st.q.size(), -1.f);
  Attention(pool, st.q.data(), st.seqs.data(), int(st.seqs.size()), st.tables.data(), s.heads,
            s.kv_heads, s.hd, st.max_ctx, st.kv, p, out.data());
  return out;
}

void ExpectNear(const std::vector<float>& want, const std::vector<float>& got,
                const std::string& what) {
  ASSERT_EQ(want.size(), got.size());
  float scale = 1e-6f;
  for (float x : want) scale = std::max(scale, std::fabs(x));
  size_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!(std::fabs(want[i] - got[i]) <= 2e-5f * scale) && bad++ < 3) {
      ADD_FAILURE() << what << ": element " << i << " " << got[i] << " vs " << want[i];
    }
  }
  EXPECT_EQ(bad, 0u) << what;
}

// Prefill chunks across block edges, a prefill from 0, decode rows at short,
// block-edge and long contexts, and a first-token decode.
const std::vector<Spec> kMixed = {{20, 37}, {100, 1}, {700, 1}, {0, 5}, {0, 1}, {255, 1}, {16, 16}};

TEST(CpuExecAttentionTest, MatchesTheReferenceEveryShapeAndTarget) {
  std::mt19937 rng(60);
  ExecPool pool(2);
  const Shape shapes[] = {{4, 4, 64, DType::kF16},
                          {8, 2, 128, DType::kF16},
                          {8, 1, 128, DType::kBF16},
                          {8, 4, 6, DType::kF32},
                          {6, 3, 80, DType::kF32},
                          {32, 4, 128, DType::kBF16},
                          {8, 1, 96, DType::kF16},
                          {4, 2, 256, DType::kF16},
                          // head_dims short of whole vectors: rows widened first.
                          {4, 2, 20, DType::kF16},
                          {4, 4, 12, DType::kBF16}};
  paged::testing::ForEachTargetThisCpuRuns([&] {
    for (const Shape& s : shapes) {
      const Step st = MakeStep(s, kMixed, rng);
      const AttnParams p;
      ExpectNear(Reference(st, s, p), Executor(pool, st, s, p), Name(s) + " " + TargetName());
    }
  });
}

// Windows shorter than a block, than a vector, and longer than the context;
// the score scale and soft-cap; sinks from far below the scores to far
// above them; all at once.
TEST(CpuExecAttentionTest, WindowScaleSoftCapAndSinks) {
  std::mt19937 rng(61);
  ExecPool pool(2);
  for (const Shape& s : {Shape{8, 2, 64, DType::kF16}, Shape{8, 8, 64, DType::kBF16},
                         Shape{4, 4, 12, DType::kF32}}) {
    const Step st = MakeStep(s, kMixed, rng);
    std::vector<float> sinks(size_t(s.heads));
    for (size_t h = 0; h < sinks.size(); ++h) sinks[h] = float(int(h % 5) * 4 - 8);
    sinks[0] = -40.f;
    sinks[1] = 30.f;
    for (int window : {0, 1, 7, 100, 100000}) {
      for (int variant = 0; variant < 4; ++variant) {
        AttnParams p;
        p.window = window;
        if (variant & 1) {
          p.scale = 0.25f;
          p.softcap = 5.f;
        }
        if (variant & 2) p.sinks = sinks.data();
        ExpectNear(
            Reference(st, s, p), Executor(pool, st, s, p),
            Name(s) + " window " + std::to_string(window) + " variant " + std::to_string(variant));
      }
    }
  }
}

// An item's bits depend on nothing but its own inputs: 1, 2 and 5 threads,
// and a sequence alone or in the batch, give the same bits.
TEST(CpuExecAttentionTest, BitsDoNotDependOnThreadsOrBatch) {
  std::mt19937 rng(62);
  ExecPool one(1), two(2), five(5);
  const Shape s{8, 2, 128, DType::kF16};
  const Step st = MakeStep(s, kMixed, rng);
  const AttnParams p;
  const std::vector<float> base = Executor(two, st, s, p);
  ExpectSameBits(base, Executor(one, st, s, p), "1 thread");
  ExpectSameBits(base, Executor(five, st, s, p), "5 threads");
  // The third sequence (700, 1) alone: its one row, from the same pool.
  Step alone = st;
  alone.seqs = {st.seqs[2]};
  alone.seqs[0].q_offset = 0;
  const size_t q_dim = size_t(s.heads) * s.hd;
  alone.q.assign(st.q.begin() + st.seqs[2].q_offset * q_dim,
                 st.q.begin() + (st.seqs[2].q_offset + 1) * q_dim);
  const std::vector<float> single = Executor(two, alone, s, p);
  ExpectSameBits(std::vector<float>(base.begin() + st.seqs[2].q_offset * q_dim,
                                    base.begin() + (st.seqs[2].q_offset + 1) * q_dim),
                 single, "alone");
}

TEST(CpuExecAttentionTest, BadShapesAndDtypesAreRefused) {
  std::mt19937 rng(63);
  ExecPool pool(1);
  const Shape s{4, 2, 64, DType::kF16};
  Step st = MakeStep(s, {{3, 1}}, rng);
  std::vector<float> out(st.q.size());
  EXPECT_DEATH(Attention(pool, st.q.data(), st.seqs.data(), 1, st.tables.data(), 4, 3, 64,
                         st.max_ctx, st.kv, AttnParams{}, out.data()),
               "heads 4/3");
  st.kv.dtype = DType::kI8;
  EXPECT_DEATH(Attention(pool, st.q.data(), st.seqs.data(), 1, st.tables.data(), 4, 2, 64,
                         st.max_ctx, st.kv, AttnParams{}, out.data()),
               "KV dtype");
}

}  // namespace
}  // namespace paged::cpu_exec
