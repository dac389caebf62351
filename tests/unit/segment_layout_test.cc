// Layout invariants of the segment plan and what FillSegment writes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "common/quant.h"
#include "common/segment.h"
#include "store/convert.h"
#include "store/segment_builder.h"
#include "tests/unit/synthetic_model.h"

namespace paged {
namespace {

using testing::MakeSyntheticModel;
using testing::SmallConfig;

struct Built {
  std::unique_ptr<SegmentHeader> owned;  // the header is large: on the heap
  std::vector<uint8_t> mem;
  const SegmentHeader& h() const { return *owned; }
};

Built Build(const ModelSource& src, const std::string& format, double kv_gib = 0.01) {
  LayoutOptions opts;
  opts.weight_format = format;
  opts.kv_gib = kv_gib;
  auto plan = PlanSegment(src, opts);
  EXPECT_TRUE(plan.ok()) << plan.status();
  Built b{*std::move(plan), {}};
  b.mem.resize(b.owned->total_bytes);
  EXPECT_TRUE(FillSegment(src, *b.owned, b.mem.data(), 2, nullptr).ok());
  b.owned->header_checksum = ComputeHeaderChecksum(*b.owned);
  std::memcpy(b.mem.data(), b.owned.get(), sizeof(SegmentHeader));
  return b;
}

class LayoutTest : public ::testing::TestWithParam<std::string> {};

TEST_P(LayoutTest, RegionsAndBlocksFollowTheContract) {
  ModelConfig c = SmallConfig();
  c.qkv_bias = GetParam() == "int4";  // exercise the bias tensors in one format
  c.arch = c.qkv_bias ? Arch::kQwen2 : Arch::kLlama;
  auto m = MakeSyntheticModel(c);
  Built b = Build(m->source, GetParam());
  const SegmentHeader& h = b.h();
  ASSERT_TRUE(ValidateHeader(h, b.mem.size()).ok()) << ValidateHeader(h, b.mem.size());

  // Regions in order, each 2 MiB aligned where the contract says so.
  EXPECT_EQ(h.globals_offset, kHeaderRegionBytes);
  EXPECT_LE(h.globals_offset + h.globals_bytes, h.layers_offset);
  EXPECT_EQ(h.layers_offset % kSegmentAlign, 0u);
  EXPECT_EQ(h.layer_block_bytes % kSegmentAlign, 0u);
  EXPECT_LE(h.layer_used_bytes, h.layer_block_bytes);
  EXPECT_LE(h.LayerOffset(c.n_layers - 1) + h.layer_block_bytes, h.kv_offset);
  EXPECT_EQ(h.kv_offset % kSegmentAlign, 0u);
  EXPECT_EQ(h.total_bytes, h.kv_offset + h.kv_bytes);
  // Every layer's own table: every tensor aligned and inside the block, no
  // overlaps, its checksum that of the bytes written. Same types: same tables.
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerTable& t = h.Layer(l);
    EXPECT_EQ(t.n_tensors, c.qkv_bias ? 12u : 9u);
    EXPECT_EQ(t.used_bytes, h.layer_used_bytes);
    std::vector<std::pair<uint64_t, uint64_t>> spans;
    for (uint32_t i = 0; i < t.n_tensors; ++i) {
      const TensorEntry& e = t.tensors[i];
      EXPECT_EQ(e.offset % kTensorAlign, 0u) << e.Name();
      EXPECT_LE(e.offset + e.bytes, t.used_bytes) << e.Name();
      EXPECT_EQ(e.offset, h.Layer(0).tensors[i].offset);
      spans.push_back({e.offset, e.offset + e.bytes});
      const uint8_t* block = b.mem.data() + h.LayerOffset(l);
      uint64_t sum = Fnv1a64(block + e.offset, e.bytes);
      if (e.scale_bytes) {
        EXPECT_LE(e.scale_offset + e.scale_bytes, t.used_bytes);
        spans.push_back({e.scale_offset, e.scale_offset + e.scale_bytes});
        sum = Fnv1a64(block + e.scale_offset, e.scale_bytes, sum);
      }
      EXPECT_EQ(e.checksum, sum) << "layer " << l << " " << e.Name();
    }
    std::sort(spans.begin(), spans.end());
    for (size_t i = 1; i < spans.size(); ++i) EXPECT_LE(spans[i - 1].second, spans[i].first);
  }

  // KV geometry.
  const uint64_t elt = h.kv_dtype == uint32_t(DType::kF32) ? 4 : 2;
  EXPECT_EQ(h.kv_block_bytes, 2ull * h.block_tokens * c.kv_dim() * elt);
  EXPECT_GT(h.kv_n_blocks, 0u);
  EXPECT_LE(h.KvBlockOffset(c.n_layers - 1, h.kv_n_blocks - 1) + h.kv_block_bytes, h.total_bytes);
}

TEST_P(LayoutTest, LayerContentsMatchTheSource) {
  auto m = MakeSyntheticModel(SmallConfig());
  Built b = Build(m->source, GetParam());
  const SegmentHeader& h = b.h();
  const TensorEntry* wg = h.LayerTensor(2, "w_gate");
  ASSERT_NE(wg, nullptr);
  const SourceTensor* src = m->source.Find("w_gate", 2);
  const uint8_t* block = b.mem.data() + h.LayerOffset(2);
  std::vector<float> row(src->cols), got(src->cols);
  for (int64_t r : {int64_t{0}, src->rows - 1}) {
    SourceRowToFloat(*src, r, row.data());
    const uint8_t* p = block + wg->offset;
    const auto* scales = reinterpret_cast<const uint16_t*>(block + wg->scale_offset) +
                         (wg->group ? r * GroupsPerRow(src->cols, int(wg->group)) : 0);
    switch (wg->Type()) {
      case DType::kF32:
        std::memcpy(got.data(), p + r * src->cols * 4, src->cols * 4);
        break;
      case DType::kF16:
        for (int64_t i = 0; i < src->cols; ++i)
          got[i] = HalfToFloat(reinterpret_cast<const uint16_t*>(p)[r * src->cols + i]);
        break;
      case DType::kBF16:
        for (int64_t i = 0; i < src->cols; ++i)
          got[i] = Bf16ToFloat(reinterpret_cast<const uint16_t*>(p)[r * src->cols + i]);
        break;
      case DType::kI8:
        DequantizeRowInt8(reinterpret_cast<const int8_t*>(p) + r * src->cols, scales, src->cols,
                          int(wg->group), got.data());
        break;
      case DType::kI4:
        DequantizeRowInt4(p + r * ((src->cols + 1) / 2), scales, src->cols, int(wg->group),
                          got.data());
        break;
      default:
        FAIL() << "unexpected dtype " << DTypeName(wg->Type());
    }
    const float tol = wg->Type() == DType::kF32  ? 0.f
                      : wg->Type() == DType::kI4 ? 0.15f
                      : wg->Type() == DType::kI8 ? 0.01f
                                                 : 0.01f;
    for (int64_t i = 0; i < src->cols; ++i)
      EXPECT_NEAR(got[i], row[i], tol) << "row " << r << " col " << i;
  }
  // Norms stay f32 whatever the format.
  const TensorEntry* norm = h.LayerTensor(2, "ffn_norm");
  EXPECT_EQ(norm->Type(), DType::kF32);
  EXPECT_EQ(std::memcmp(block + norm->offset, m->source.Find("ffn_norm", 2)->data, norm->bytes), 0);
}

INSTANTIATE_TEST_SUITE_P(Formats, LayoutTest,
                         ::testing::Values("f32", "native", "bf16", "int8", "int4"));

TEST(LayoutTest, NativeOfF32CheckpointIsF16AndTiedHasNoOutput) {
  ModelConfig c = SmallConfig();
  c.tied_embeddings = 1;
  auto m = MakeSyntheticModel(c);
  Built b = Build(m->source, "native");
  EXPECT_EQ(b.h().weight_format, uint32_t(WeightFormat::kF16));
  EXPECT_EQ(b.h().FindGlobal("output"), nullptr);
  EXPECT_EQ(b.h().n_global_tensors, 2u);
}

TEST(LayoutTest, BadOptionsAreClearErrors) {
  auto m = MakeSyntheticModel(SmallConfig());
  LayoutOptions o;
  o.weight_format = "fp8";
  EXPECT_NE(PlanSegment(m->source, o).status().message().find("--weight-format=fp8"),
            std::string::npos);
  o = LayoutOptions();
  o.block_tokens = 0;
  EXPECT_NE(PlanSegment(m->source, o).status().message().find("--block-tokens"), std::string::npos);
}

TEST(ValidateHeaderTest, RejectsCorruption) {
  auto m = MakeSyntheticModel(SmallConfig());
  Built b = Build(m->source, "f16");
  ASSERT_TRUE(ValidateHeader(b.h(), b.mem.size()).ok());
  auto corrupt = [&](auto mutate, const char* want) {
    auto h = std::make_unique<SegmentHeader>(b.h());
    mutate(*h);
    h->header_checksum = ComputeHeaderChecksum(*h);
    const absl::Status s = ValidateHeader(*h, b.mem.size());
    EXPECT_FALSE(s.ok()) << want;
    EXPECT_NE(s.message().find(want), std::string::npos) << s;
  };
  corrupt([](SegmentHeader& h) { h.magic[0] = 'X'; }, "bad magic");
  corrupt([](SegmentHeader& h) { h.layout_version = 99; }, "layout version");
  corrupt([](SegmentHeader& h) { h.layers[1].tensors[1].offset = h.layers[1].used_bytes; },
          "layer 1 tensor 'wq': data outside its region");
  corrupt([](SegmentHeader& h) { h.layers[2].tensors[1].rows += 1; }, "size does not match shape");
  corrupt([](SegmentHeader& h) { h.kv_bytes = 1ull << 60; }, "KV pool out of bounds");
  corrupt([](SegmentHeader& h) { h.layer_block_bytes = 1ull << 62; }, "layer");
  corrupt([](SegmentHeader& h) { h.model.n_kv_heads = 3; }, "n_kv_heads");
  corrupt([](SegmentHeader& h) { h.layers[0].n_tensors = 1000; }, "too many tensors");
  corrupt([](SegmentHeader& h) { h.layers[1].n_tensors = 0; }, "layer 1 has no tensors");
  corrupt([](SegmentHeader& h) { h.layers[1].used_bytes = h.layer_used_bytes + 1; },
          "more than the");
  corrupt([](SegmentHeader& h) { h.layer_used_bytes += kTensorAlign; },
          "layer_used_bytes is not the largest layer's");
  corrupt([](SegmentHeader& h) { h.model.n_layers = kMaxSegmentLayers + 1; }, "layer tables");
  corrupt(
      [](SegmentHeader& h) {
        TensorEntry& e = h.layers[0].tensors[1];  // wq [64, 64] as q4_k: rows are not whole blocks
        e.dtype = uint32_t(DType::kQ4_K);
        e.bytes = PayloadBytes(DType::kQ4_K, uint64_t(e.rows), uint64_t(e.cols));
      },
      "q4_k rows of 64 values are not whole blocks of 256");
  corrupt([](SegmentHeader& h) { h.layers[0].tensors[1].dtype = 99; }, "unknown dtype");
  auto h = std::make_unique<SegmentHeader>(b.h());
  h->generation += 1;  // without a new checksum
  EXPECT_NE(ValidateHeader(*h, b.mem.size()).message().find("checksum"), std::string::npos);
  EXPECT_FALSE(ValidateHeader(b.h(), b.mem.size() - 1).ok());
}

TEST(ConvertTest, RopePermutationMovesAdjacentPairsToHalves) {
  // Rows hold their own source index; head_dim 4: source rows (0,1,2,3) of a
  // head are pairs (0,1), (2,3); halves order puts 0,2 first then 1,3.
  std::vector<float> data(8 * 2);
  for (int r = 0; r < 8; ++r) data[r * 2] = data[r * 2 + 1] = float(r);
  SourceTensor t;
  t.name = "wq";
  t.type = SourceType::kF32;
  t.rows = 8;
  t.cols = 2;
  t.data = reinterpret_cast<const uint8_t*>(data.data());
  t.bytes = data.size() * 4;
  t.rope_permute_head_dim = 4;
  std::vector<float> out(16);
  ConvertTensor(t, DType::kF32, 0, reinterpret_cast<uint8_t*>(out.data()), nullptr, 1);
  const float want[8] = {0, 2, 1, 3, 4, 6, 5, 7};
  for (int r = 0; r < 8; ++r) EXPECT_EQ(out[r * 2], want[r]) << r;
}

TEST(ConvertTest, Q8_0CopiesIntoInt8Group32Exactly) {
  // Two rows of 32 values: {scale f16, int8 q[32]} each.
  std::vector<uint8_t> q8(2 * 34);
  for (int r = 0; r < 2; ++r) {
    const uint16_t s = FloatToHalf(0.5f * (r + 1));
    std::memcpy(&q8[r * 34], &s, 2);
    for (int k = 0; k < 32; ++k) q8[r * 34 + 2 + k] = uint8_t(int8_t(k - 16 + r));
  }
  SourceTensor t;
  t.name = "w_up";
  t.type = SourceType::kQ8_0;
  t.rows = 2;
  t.cols = 32;
  t.data = q8.data();
  t.bytes = q8.size();
  std::vector<uint8_t> q(64);
  std::vector<uint16_t> s(2);
  ConvertTensor(t, DType::kI8, 32, q.data(), reinterpret_cast<uint8_t*>(s.data()), 1);
  EXPECT_EQ(HalfToFloat(s[1]), 1.0f);
  EXPECT_EQ(int8_t(q[32 + 5]), 5 - 16 + 1);
  std::vector<float> row(32);
  SourceRowToFloat(t, 1, row.data());
  EXPECT_EQ(row[5], 1.0f * (5 - 16 + 1));
}

}  // namespace
}  // namespace paged
