// The ggml block formats against llama.cpp's own tools (tests/golden/gguf/,
// made by scripts/make_gguf_fixtures.py: files from llama-quantize and
// gguf-py, reference rows from gguf-py's dequantizer): our reference
// dequantizer and pagectl dump-tensor give gguf-py's values bit for bit; the
// store keeps every block as the file has it (a Q4_K_M file's layers with
// their own tables) or decodes it exactly for an explicit format; the mixed
// Q4_K_M model runs on the CPU reference.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "client/pagectl/dump_tensor.h"
#include "common/block_quant.h"
#include "common/quant.h"
#include "common/segment.h"
#include "store/gguf.h"
#include "store/gguf_model.h"
#include "tests/unit/golden_util.h"
#include "tests/unit/test_util.h"
#include "worker/backends/cpu/cpu_backend.h"
#include "worker/engine/generator.h"
#include "worker/engine/resident_provider.h"
#include "worker/offline/offline_runner.h"
#include "worker/offline/owned_image.h"
#include "worker/pager/pager.h"
#include "worker/pager/planner.h"

namespace paged {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// ---- the fixtures and gguf-py's view of them ---------------------------------

struct RefTensor {
  std::string name, type;  // the file's name, gguf-py's type name ("Q4_K")
  int64_t rows = 0, cols = 0;
  uint64_t offset = 0, bytes = 0;  // absolute byte range of the data in the file
};
struct RefRow {
  std::string tensor;
  int64_t row = 0;
  uint64_t at = 0;  // value index in refs.bin
};
struct RefFile {
  std::string name, path, bytes;  // the file's contents
  std::vector<RefTensor> tensors;
  std::vector<RefRow> rows;
  const RefTensor& Tensor(const std::string& n) const {
    for (const RefTensor& t : tensors) {
      if (t.name == n) return t;
    }
    ADD_FAILURE() << name << " has no tensor " << n;
    return tensors.front();
  }
};
struct Refs {
  std::vector<RefFile> files;
  std::vector<float> values;
  const RefFile& File(const std::string& n) const {
    for (const RefFile& f : files) {
      if (f.name == n) return f;
    }
    ADD_FAILURE() << "no fixture " << n;
    return files.front();
  }
};

std::string FixtureDir() { return testing::SourceDir() + "/tests/golden/gguf"; }

const Refs& LoadRefs() {
  static const Refs* refs = [] {
    auto* r = new Refs;
    const auto j = nlohmann::json::parse(testing::ReadFile(FixtureDir() + "/refs.json"));
    const std::string bin = testing::ReadFile(FixtureDir() + "/refs.bin");
    r->values.resize(bin.size() / 4);
    std::memcpy(r->values.data(), bin.data(), r->values.size() * 4);
    for (const auto& jf : j["files"]) {
      RefFile f;
      f.name = jf["file"].get<std::string>();
      f.path = FixtureDir() + "/" + f.name;
      f.bytes = testing::ReadFile(f.path);
      for (const auto& t : jf["tensors"]) {
        f.tensors.push_back({t["name"], t["type"], t["rows"], t["cols"], t["offset"], t["bytes"]});
      }
      for (const auto& row : jf["rows"]) f.rows.push_back({row["tensor"], row["row"], row["at"]});
      r->files.push_back(std::move(f));
    }
    return r;
  }();
  return *refs;
}

// gguf-py's type name as our DType ("Q4_K" -> q4_k).
DType DTypeOfGgml(const std::string& name) {
  std::string lower = name;
  for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
  absl::StatusOr<DType> t = ParseDType(lower);
  EXPECT_TRUE(t.ok()) << name;
  return t.value_or(DType::kF32);
}

// Index of the first value whose bits differ, or -1.
int64_t FirstDifference(const float* got, const float* want, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (BitsFromF32(got[i]) != BitsFromF32(want[i])) return i;
  }
  return -1;
}

// The segment row that a file row lands in: GGUF llama wq / wk rows are
// permuted to the halves RoPE order (docs/store.md), head_dim 64 here.
int64_t SegmentRowOf(const std::string& canonical, int64_t file_row) {
  if (canonical != "wq" && canonical != "wk") return file_row;
  constexpr int64_t kHeadDim = 64;
  const int64_t head = file_row / kHeadDim, r = file_row % kHeadDim;
  return head * kHeadDim + (r % 2) * (kHeadDim / 2) + r / 2;
}

std::vector<std::string> FileNames() {
  std::vector<std::string> names;
  for (const RefFile& f : LoadRefs().files) names.push_back(f.name);
  return names;
}

// ---- the dtypes ----------------------------------------------------------------

TEST(BlockFormatTest, GeometryAndNamesAreGgmls) {
  const std::pair<uint32_t, DType> kTypes[] = {
      {2, DType::kQ4_0},   {3, DType::kQ4_1},  {6, DType::kQ5_0},    {7, DType::kQ5_1},
      {8, DType::kQ8_0},   {10, DType::kQ2_K}, {11, DType::kQ3_K},   {12, DType::kQ4_K},
      {13, DType::kQ5_K},  {14, DType::kQ6_K}, {20, DType::kIQ4_NL}, {23, DType::kIQ4_XS},
      {39, DType::kMXFP4},
  };
  for (const auto& [id, t] : kTypes) {
    const std::optional<GgmlTypeInfo> info = GgmlTypeInfoOf(id);
    ASSERT_TRUE(info.has_value()) << id;
    EXPECT_TRUE(IsBlockFormat(t));
    EXPECT_FALSE(IsQuantized(t));
    EXPECT_TRUE(HasSelfContainedRows(t));
    EXPECT_EQ(BlockValues(t), int(info->block_values)) << info->name;
    EXPECT_EQ(BlockBytes(t), int(info->block_bytes)) << info->name;
    EXPECT_EQ(DTypeOfGgml(std::string(info->name)), t);
    EXPECT_EQ(*ParseDType(DTypeName(t)), t);
    EXPECT_EQ(PayloadBytes(t, 3, 2 * info->block_values), 6u * info->block_bytes);
    EXPECT_FALSE(RowFits(t, info->block_values + 1));
    EXPECT_TRUE(RowFits(t, 4 * int64_t(info->block_values)));
  }
  EXPECT_DOUBLE_EQ(BitsPerWeight(DType::kQ4_K), 4.5);
  EXPECT_DOUBLE_EQ(BitsPerWeight(DType::kQ6_K), 6.5625);
  EXPECT_DOUBLE_EQ(BitsPerWeight(DType::kMXFP4), 4.25);
  EXPECT_DOUBLE_EQ(BitsPerWeight(DType::kI8, 32), 8.5);
  EXPECT_DOUBLE_EQ(BitsPerWeight(DType::kI4, 32), 4.5);
  EXPECT_FALSE(IsBlockFormat(DType::kI4));
  EXPECT_FALSE(HasSelfContainedRows(DType::kI8));
  EXPECT_TRUE(RowFits(DType::kI4, 33));
}

// Blocks made by hand, for failures a person can read.
TEST(BlockFormatTest, HandMadeBlocks) {
  // q4_0: d = 0.5, low nibbles k, high nibbles 15 - k.
  uint8_t q4[18];
  const uint16_t half = FloatToHalf(0.5f);
  std::memcpy(q4, &half, 2);
  for (int k = 0; k < 16; ++k) q4[2 + k] = uint8_t(k | (15 - k) << 4);
  float y[32];
  DequantizeRow(DType::kQ4_0, q4, 32, y);
  for (int k = 0; k < 16; ++k) {
    EXPECT_EQ(y[k], 0.5f * float(k - 8)) << k;
    EXPECT_EQ(y[16 + k], 0.5f * float(7 - k)) << k;
  }
  // mxfp4: the E8M0 scale 2^(e - 127) times the e2m1 value (table doubled,
  // scale halved); e 0 and 1 are the f32 subnormals 2^-128 and 2^-127.
  uint8_t mx[17] = {};
  for (int k = 0; k < 16; ++k) mx[1 + k] = uint8_t(k | k << 4);
  const float e2m1[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
  for (int e : {127, 130, 1, 0}) {
    mx[0] = uint8_t(e);
    DequantizeRow(DType::kMXFP4, mx, 32, y);
    for (int k = 0; k < 32; ++k)
      EXPECT_EQ(y[k], std::ldexp(e2m1[k % 16], e - 127)) << "e " << e << " k " << k;
  }
  // q8_0 rows of two blocks.
  uint8_t q8[68];
  for (int b = 0; b < 2; ++b) {
    const uint16_t d = FloatToHalf(b == 0 ? 0.25f : -2.f);
    std::memcpy(q8 + 34 * b, &d, 2);
    for (int k = 0; k < 32; ++k) q8[34 * b + 2 + k] = uint8_t(int8_t(k - 16));
  }
  float y64[64];
  DequantizeRow(DType::kQ8_0, q8, 64, y64);
  EXPECT_EQ(y64[0], -4.f);
  EXPECT_EQ(y64[32 + 31], -30.f);
}

// ---- bit for bit against gguf-py ------------------------------------------------

TEST(GgufFixtureTest, EveryTypeIsCovered) {
  std::set<std::string> types;
  for (const RefFile& f : LoadRefs().files) {
    for (const RefTensor& t : f.tensors) types.insert(t.type);
  }
  for (const char* want : {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
                           "Q6_K", "IQ4_NL", "IQ4_XS", "MXFP4"})
    EXPECT_TRUE(types.count(want)) << want;
}

TEST(GgufFixtureTest, DequantizeRowMatchesGgufPyBitForBit) {
  const Refs& refs = LoadRefs();
  int checked = 0;
  for (const RefFile& f : refs.files) {
    for (const RefRow& r : f.rows) {
      const RefTensor& t = f.Tensor(r.tensor);
      const DType dt = DTypeOfGgml(t.type);
      const uint64_t row_bytes = t.bytes / uint64_t(t.rows);
      ASSERT_EQ(row_bytes, PayloadBytes(dt, 1, uint64_t(t.cols))) << f.name << " " << t.name;
      std::vector<float> got(size_t(t.cols));
      DequantizeRow(dt, f.bytes.data() + t.offset + uint64_t(r.row) * row_bytes, t.cols,
                    got.data());
      const int64_t diff = FirstDifference(got.data(), refs.values.data() + r.at, t.cols);
      EXPECT_EQ(diff, -1) << f.name << " " << t.name << " (" << t.type << ") row " << r.row << ": "
                          << got[size_t(std::max<int64_t>(diff, 0))] << " vs gguf-py "
                          << refs.values[r.at + uint64_t(std::max<int64_t>(diff, 0))];
      ++checked;
    }
  }
  EXPECT_GT(checked, 300);
}

TEST(GgufFixtureTest, DumpTensorOfTheFileMatchesGgufPy) {
  const Refs& refs = LoadRefs();
  for (const RefFile& f : refs.files) {
    for (const RefTensor& t : f.tensors) {
      if (t.rows == 1) continue;
      DumpTensorOptions o;
      o.model = f.path;
      o.tensor = t.name;  // the file's own name
      auto d = ReadTensorRows(o);
      ASSERT_TRUE(d.ok()) << d.status();
      EXPECT_EQ(d->type, t.type);
      ASSERT_EQ(d->rows, t.rows);
      ASSERT_EQ(d->cols, t.cols);
      for (const RefRow& r : f.rows) {
        if (r.tensor != t.name) continue;
        EXPECT_EQ(
            FirstDifference(d->values.data() + r.row * t.cols, refs.values.data() + r.at, t.cols),
            -1)
            << f.name << " " << t.name << " row " << r.row;
      }
    }
  }
}

TEST(GgufFixtureTest, PagectlDumpTensorWritesGgufPyValues) {
  const Refs& refs = LoadRefs();
  testing::TempDir dir;
  for (const RefFile& f : refs.files) {
    const RefTensor& t = f.Tensor("blk.0.ffn_down.weight");
    const std::string out = dir.File(f.name + ".f32");
    // The canonical name with --layer, rows 0 and 1.
    auto [rc, text] =
        testing::RunCommand({testing::BinaryPath("pagectl"), "dump-tensor", "--model=" + f.path,
                             "--tensor=w_down", "--layer=0", "--rows=0:2", "--out=" + out});
    ASSERT_EQ(rc, 0) << text;
    EXPECT_THAT(text, HasSubstr("rows 0:2 of layer 0 w_down (" + t.type));
    const std::string got = testing::ReadFile(out);
    ASSERT_EQ(got.size(), size_t(2 * t.cols * 4));
    std::vector<float> values(size_t(2 * t.cols));
    std::memcpy(values.data(), got.data(), got.size());
    for (const RefRow& r : f.rows) {
      if (r.tensor != t.name || r.row > 1) continue;
      EXPECT_EQ(FirstDifference(values.data() + r.row * t.cols, refs.values.data() + r.at, t.cols),
                -1)
          << f.name << " row " << r.row;
    }
  }
  auto [rc, text] = testing::RunCommand(
      {testing::BinaryPath("pagectl"), "dump-tensor", "--model=" + refs.files[0].path,
       "--tensor=blk.0.attn_q.weight", "--rows=5:3", "--out=" + dir.File("x")});
  EXPECT_EQ(rc, 2);
  EXPECT_THAT(text, HasSubstr("--rows=5:3: expected A:B with 0 <= A < B <= 256"));
}

// ---- the store keeps the blocks --------------------------------------------------

std::unique_ptr<OwnedImage> Build(const std::string& path, const std::string& format) {
  LayoutOptions layout;
  layout.weight_format = format;
  layout.kv_gib = 0.001;
  auto img = OwnedImage::Build(path, layout, 2);
  EXPECT_TRUE(img.ok()) << img.status();
  return img.ok() ? *std::move(img) : nullptr;
}

// The segment entry of a file's tensor and where its offsets start.
const TensorEntry* Entry(const ModelImage& img, const std::string& gguf_name,
                         const uint8_t** origin, std::string* canonical, int* layer_out = nullptr) {
  int layer = -1;
  EXPECT_TRUE(GgufCanonicalName(gguf_name, canonical, &layer)) << gguf_name;
  if (layer_out != nullptr) *layer_out = layer;
  const SegmentHeader& h = *img.header;
  *origin = layer < 0 ? img.weights : img.weights + h.LayerOffset(layer);
  return layer < 0 ? h.FindGlobal(*canonical) : h.LayerTensor(layer, *canonical);
}

class NativeSegmentTest : public ::testing::TestWithParam<std::string> {};

TEST_P(NativeSegmentTest, KeepsEveryBlockAsTheFileHasIt) {
  const Refs& refs = LoadRefs();
  const RefFile& f = refs.File(GetParam());
  auto owned = Build(f.path, "native");
  ASSERT_NE(owned, nullptr);
  const ModelImage& img = owned->image();
  const SegmentHeader& h = *img.header;
  ASSERT_TRUE(ValidateHeader(h, h.total_bytes).ok()) << ValidateHeader(h, h.total_bytes);
  EXPECT_EQ(h.weight_format, uint32_t(WeightFormat::kNative));
  for (const RefTensor& t : f.tensors) {
    const uint8_t* origin = nullptr;
    std::string canonical;
    int layer = -1;
    const TensorEntry* e = Entry(img, t.name, &origin, &canonical, &layer);
    ASSERT_NE(e, nullptr) << t.name;
    ASSERT_EQ(e->rows, t.rows);
    ASSERT_EQ(e->cols, t.cols);
    uint64_t sum = Fnv1a64(origin + e->offset, e->bytes);
    if (e->scale_bytes) sum = Fnv1a64(origin + e->scale_offset, e->scale_bytes, sum);
    EXPECT_EQ(e->checksum, sum) << t.name;
    if (t.type == "Q8_0") {
      // Q8_0 becomes int8 group 32 in a layer (its scales moved out of the
      // blocks: the same values), f16 as embeddings (rounded once).
      EXPECT_EQ(e->Type(), layer >= 0 ? DType::kI8 : DType::kF16) << t.name;
      DumpTensorOptions o;
      o.tensor = t.name;
      o.model = f.path;
      auto want = ReadTensorRows(o);
      ASSERT_TRUE(want.ok()) << want.status();
      std::vector<float> row(size_t(t.cols)), expect(size_t(t.cols));
      for (int64_t r = 0; r < t.rows; ++r) {
        const int64_t dst = SegmentRowOf(canonical, r);
        std::copy_n(want->values.begin() + r * t.cols, t.cols, expect.begin());
        if (e->Type() == DType::kI8) {
          DequantizeRowInt8(
              reinterpret_cast<const int8_t*>(origin + e->offset) + dst * t.cols,
              reinterpret_cast<const uint16_t*>(origin + e->scale_offset) + dst * t.cols / 32,
              t.cols, 32, row.data());
        } else {
          DequantizeRow(e->Type(), origin + e->offset + uint64_t(dst * t.cols * 2), t.cols,
                        row.data());
          for (float& v : expect) v = HalfToFloat(FloatToHalf(v));
        }
        EXPECT_EQ(FirstDifference(row.data(), expect.data(), t.cols), -1) << t.name << " " << r;
      }
      continue;
    }
    // Everything else is copied: the same type, the same bytes, row by row
    // (wq / wk rows moved to the halves order).
    EXPECT_EQ(std::string(DTypeName(e->Type())), std::string(DTypeName(DTypeOfGgml(t.type))))
        << t.name;
    ASSERT_EQ(e->bytes, t.bytes) << t.name;
    const uint64_t row_bytes = t.bytes / uint64_t(t.rows);
    int64_t moved = 0;
    for (int64_t r = 0; r < t.rows; ++r) {
      const int64_t dst = SegmentRowOf(canonical, r);
      moved += dst != r;
      ASSERT_EQ(std::memcmp(origin + e->offset + uint64_t(dst) * row_bytes,
                            f.bytes.data() + t.offset + uint64_t(r) * row_bytes, row_bytes),
                0)
          << f.name << " " << t.name << " file row " << r;
    }
    if (canonical == "wq" || canonical == "wk") {
      EXPECT_GT(moved, 0);
    }
  }
}

TEST_P(NativeSegmentTest, ExplicitFormatsDecodeThroughTheReference) {
  const Refs& refs = LoadRefs();
  const RefFile& f = refs.File(GetParam());
  for (const char* format : {"f32", "f16", "bf16"}) {
    auto owned = Build(f.path, format);
    ASSERT_NE(owned, nullptr);
    const ModelImage& img = owned->image();
    for (const RefRow& r : f.rows) {
      const RefTensor& t = f.Tensor(r.tensor);
      const uint8_t* origin = nullptr;
      std::string canonical;
      const TensorEntry* e = Entry(img, t.name, &origin, &canonical);
      ASSERT_NE(e, nullptr);
      const DType want_type = std::string(format) == "f32"   ? DType::kF32
                              : std::string(format) == "f16" ? DType::kF16
                                                             : DType::kBF16;
      EXPECT_EQ(e->Type(), want_type) << format << " " << t.name;
      std::vector<float> got(size_t(t.cols));
      DequantizeRow(e->Type(),
                    origin + e->offset +
                        uint64_t(SegmentRowOf(canonical, r.row)) * (e->bytes / uint64_t(t.rows)),
                    t.cols, got.data());
      // f32: gguf-py's values; f16 / bf16: those values rounded once.
      std::vector<float> want(refs.values.begin() + int64_t(r.at),
                              refs.values.begin() + int64_t(r.at) + t.cols);
      for (float& v : want) {
        if (want_type == DType::kF16) v = HalfToFloat(FloatToHalf(v));
        if (want_type == DType::kBF16) v = Bf16ToFloat(FloatToBf16(v));
      }
      EXPECT_EQ(FirstDifference(got.data(), want.data(), t.cols), -1)
          << format << " " << f.name << " " << t.name << " row " << r.row;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Files, NativeSegmentTest, ::testing::ValuesIn(FileNames()),
                         [](const auto& info) {
                           std::string n = info.param.substr(5, info.param.size() - 10);
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

// ---- a mixed file: per-layer tables, and it runs -----------------------------------

TEST(MixedQ4KMTest, LayersHaveTheirOwnTables) {
  const RefFile& f = LoadRefs().File("tiny-q4_k_m.gguf");
  EXPECT_EQ(f.Tensor("blk.0.attn_v.weight").type, "Q4_K");
  EXPECT_EQ(f.Tensor("blk.1.attn_v.weight").type, "Q6_K");
  auto owned = Build(f.path, "native");
  ASSERT_NE(owned, nullptr);
  const SegmentHeader& h = *owned->image().header;
  EXPECT_EQ(h.LayerTensor(0, "wv")->Type(), DType::kQ4_K);
  EXPECT_EQ(h.LayerTensor(1, "wv")->Type(), DType::kQ6_K);
  EXPECT_EQ(h.LayerTensor(1, "w_down")->Type(), DType::kQ6_K);
  EXPECT_EQ(h.LayerTensor(1, "wq")->Type(), DType::kQ4_K);
  // Layer 1 is larger, its tensors after wv further on; the stride fits it.
  EXPECT_GT(h.LayerUsedBytes(1), h.LayerUsedBytes(0));
  EXPECT_EQ(h.layer_used_bytes, h.LayerUsedBytes(1));
  EXPECT_GT(h.LayerTensor(1, "wo")->offset, h.LayerTensor(0, "wo")->offset);
  EXPECT_EQ(h.LayerTensor(1, "wq")->offset, h.LayerTensor(0, "wq")->offset);
  EXPECT_GE(h.layer_block_bytes, h.layer_used_bytes);
  EXPECT_EQ(h.layer_block_bytes % kSegmentAlign, 0u);
  EXPECT_EQ(h.FindGlobal("tok_embd")->Type(), DType::kQ4_K);
  EXPECT_EQ(h.FindGlobal("output")->Type(), DType::kQ6_K);
  EXPECT_EQ(h.kv_dtype, uint32_t(DType::kF16));
}

TEST(MixedQ4KMTest, ProductsAreThoseOfTheDecodedF32Weights) {
  // Decoding a block row gives exactly the values an f32 segment holds, so
  // the reference's products (and embedding rows) are the same bits.
  const std::string path = FixtureDir() + "/tiny-q4_k_m.gguf";
  auto native = Build(path, "native");
  auto f32 = Build(path, "f32");
  ASSERT_NE(native, nullptr);
  ASSERT_NE(f32, nullptr);
  std::unique_ptr<Backend> cpu = MakeCpuBackend(2);
  const int n = 5;
  std::vector<float> x(size_t(n) * 512);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * float(i));
  for (int l = 0; l < 2; ++l) {
    for (const char* name : {"wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"}) {
      const WeightRef a = native->image().LayerTensor(l, name);
      const WeightRef b = f32->image().LayerTensor(l, name);
      ASSERT_TRUE(IsBlockFormat(a.dtype)) << name;
      ASSERT_EQ(b.dtype, DType::kF32);
      std::vector<float> ya(size_t(n * a.rows)), yb(size_t(n * b.rows));
      cpu->MatMul(x.data(), n, a, nullptr, ya.data());
      cpu->MatMul(x.data(), n, b, nullptr, yb.data());
      ASSERT_TRUE(cpu->Synchronize().ok());
      EXPECT_EQ(FirstDifference(ya.data(), yb.data(), int64_t(ya.size())), -1)
          << "layer " << l << " " << name;
    }
  }
  const int32_t ids[3] = {0, 17, 63};
  std::vector<float> ea(3 * 256), eb(3 * 256);
  cpu->Embedding(native->image().Global("tok_embd"), ids, 3, ea.data());
  cpu->Embedding(f32->image().Global("tok_embd"), ids, 3, eb.data());
  EXPECT_EQ(FirstDifference(ea.data(), eb.data(), 3 * 256), -1);
}

TEST(MixedQ4KMTest, RunsOnTheCpuReference) {
  const std::string path = FixtureDir() + "/tiny-q4_k_m.gguf";
  const std::vector<int32_t> tokens = {1, 17, 42, 5, 63, 8, 30, 2, 11};
  const auto native = testing::RunLogits(path, "native", tokens, false, "cpu-ref");
  ASSERT_EQ(native.size(), tokens.size());
  // The f32 image of the same weights differs only by its f32 KV cache
  // (native keeps an f16 one).
  const auto f32 = testing::RunLogits(path, "f32", tokens, false, "cpu-ref");
  ASSERT_EQ(f32.size(), tokens.size());
  for (size_t p = 0; p < tokens.size(); ++p) {
    ASSERT_EQ(native[p].size(), 64u);
    const std::vector<double> want(f32[p].begin(), f32[p].end());
    EXPECT_LT(testing::RelativeError(native[p], want), 1e-2) << "position " << p;
  }
  // --device=cpu reads the blocks in place with the executor's kernels (a
  // different summation order than the reference's): the same logits to f32
  // rounding.
  const auto cpu = testing::RunLogits(path, "native", tokens, false, "cpu");
  ASSERT_EQ(cpu.size(), tokens.size());
  for (size_t p = 0; p < tokens.size(); ++p) {
    const std::vector<double> want(native[p].begin(), native[p].end());
    EXPECT_LT(testing::RelativeError(cpu[p], want), 1e-4) << "position " << p;
  }
  // And greedy generation, as paged-run does it.
  testing::TempDir dir;
  OfflineRunOptions o;
  o.model_path = path;
  o.device = "cpu-ref";
  o.prompt_tokens = {1, 17, 42};
  o.max_new_tokens = 8;
  o.print_tokens = true;
  std::FILE* out = std::fopen(dir.File("out").c_str(), "w");
  std::FILE* err = std::fopen(dir.File("err").c_str(), "w");
  const absl::Status s = RunOffline(o, out, err);
  std::fclose(out);
  std::fclose(err);
  ASSERT_TRUE(s.ok()) << s;
  std::istringstream text(testing::ReadFile(dir.File("out")));
  std::vector<int> ids;
  for (int id; text >> id;) ids.push_back(id);
  EXPECT_EQ(ids.size(), 8u);
  for (int id : ids) EXPECT_TRUE(id >= 0 && id < 64) << id;
}

TEST(MixedQ4KMTest, PagedThroughSlotsOfTheLargestLayerMatchesResident) {
  // Layers of different sizes go through slots sized for the largest; each
  // copy moves the layer's own bytes, from its own table.
  auto run = [](bool paged, PagerStats* stats) {
    auto img = Build(FixtureDir() + "/tiny-q4_k_m.gguf", "native");
    std::unique_ptr<Backend> backend = MakeCpuBackend(2);
    std::unique_ptr<WeightProvider> provider;
    Pager* pager = nullptr;
    if (paged) {
      PlanLimits l;
      l.budget_bytes = 1ull << 30;
      l.max_step_tokens = 64;
      l.max_step_seqs = 2;
      l.max_step_kv_tokens = 256;
      l.resident = "none";
      auto plan = PlanMemory(*img->image().header, l);
      EXPECT_TRUE(plan.ok()) << plan.status();
      EXPECT_EQ(plan->slot_layer_bytes, AlignUp(img->image().header->LayerUsedBytes(1), 4096));
      EXPECT_EQ(plan->paged_weight_bytes_per_step,
                img->image().header->LayerUsedBytes(0) + img->image().header->LayerUsedBytes(1));
      auto p = Pager::Create(backend.get(), img->image(), *plan);
      EXPECT_TRUE(p.ok()) << p.status();
      pager = p->get();
      provider = std::move(*p);
    } else {
      provider = std::move(*ResidentProvider::Create(backend.get(), img->image()));
    }
    Engine engine(backend.get(), provider.get(), img->image().config(),
                  int(img->image().header->block_tokens));
    GenerateRequest req;
    req.prompt = {1, 17, 42};
    req.max_new_tokens = 16;
    req.stop_at_eos = false;
    auto r = Generate(engine, req, img->image().header->kv_n_blocks);
    EXPECT_TRUE(r.ok()) << r.status();
    if (pager != nullptr) *stats = pager->stats();
    return r.ok() ? r->tokens : std::vector<int32_t>{};
  };
  PagerStats stats;
  const std::vector<int32_t> resident = run(false, nullptr);
  ASSERT_EQ(resident.size(), 16u);
  EXPECT_EQ(run(true, &stats), resident);
  auto img = Build(FixtureDir() + "/tiny-q4_k_m.gguf", "native");
  const SegmentHeader& h = *img->image().header;
  EXPECT_EQ(stats.h2d_weight_bytes, stats.steps * (h.LayerUsedBytes(0) + h.LayerUsedBytes(1)));
}

// ---- bad files ---------------------------------------------------------------

// End to end against llama.cpp on the same files (tests/golden/gguf/
// llama_logits.json; tests/golden/gguf/README.md says how it was made).
//   - files_dequantized: llama.cpp on each file with its tensors dequantized
//     to F32 by gguf-py, so the same weight values as ours without llama.cpp's
//     activation quantization: we must agree to f32 and f16-KV rounding.
//   - files: llama.cpp on the quantized file itself. It quantizes the
//     activations of every quantized product (q8_0 / q8_K blocks), which on
//     these random tiny models moves its own logits by 1.4-11% from its
//     dequantized-F32 run (measured, relative per position); ours lie as far
//     from it, and the greedy choices agree but for near ties.
TEST(GgufFixtureTest, LogitsMatchLlamaCppOnEveryFile) {
  const std::string dir = FixtureDir();
  std::ifstream in(dir + "/llama_logits.json");
  ASSERT_TRUE(in.good()) << dir << "/llama_logits.json";
  const auto oracle = nlohmann::json::parse(in);
  const std::vector<int32_t> tokens = oracle["tokens"].get<std::vector<int32_t>>();
  ASSERT_EQ(oracle["files"].size(), 12u);
  ASSERT_EQ(oracle["files_dequantized"].size(), 12u);
  for (const auto& [file, quantized] : oracle["files"].items()) {
    const auto& dequantized = oracle["files_dequantized"][file];
    for (const char* device : {"cpu", "cpu-ref"}) {
      const auto got = testing::RunLogits(dir + "/" + file, "native", tokens, false, device);
      ASSERT_EQ(got.size(), tokens.size()) << file;
      int same_argmax = 0;
      double worst_exact = 0, worst_quantized = 0;
      for (size_t p = 0; p < tokens.size(); ++p) {
        const std::vector<double> exact = dequantized[p].get<std::vector<double>>();
        const std::vector<double> q = quantized[p].get<std::vector<double>>();
        ASSERT_EQ(got[p].size(), exact.size()) << file;
        const double e = testing::RelativeError(got[p], exact);
        const double eq = testing::RelativeError(got[p], q);
        worst_exact = std::max(worst_exact, e);
        worst_quantized = std::max(worst_quantized, eq);
        // Our native segments keep an f16 KV cache, llama.cpp an f32 one.
        EXPECT_LT(e, 5e-3) << file << " on " << device << ", position " << p;
        EXPECT_LT(eq, 0.15) << file << " on " << device << ", position " << p;
        const auto g = std::max_element(got[p].begin(), got[p].end()) - got[p].begin();
        const auto w = std::max_element(q.begin(), q.end()) - q.begin();
        same_argmax += g == w;
      }
      std::printf("%-18s %-7s vs llama.cpp dequantized %.1e, quantized %.1e, argmax %d of %zu\n",
                  file.c_str(), device, worst_exact, worst_quantized, same_argmax, tokens.size());
      // Greedy choices agree with the quantized run (a near tie may flip one).
      EXPECT_GE(same_argmax, int(tokens.size()) - 1) << file << " on " << device;
    }
    // The blocks decoded at load into an f32 segment (f32 KV as well): the
    // same computation as llama.cpp's on the dequantized file, to f32
    // rounding.
    const auto f32 = testing::RunLogits(dir + "/" + file, "f32", tokens, false, "cpu-ref");
    ASSERT_EQ(f32.size(), tokens.size()) << file;
    for (size_t p = 0; p < tokens.size(); ++p) {
      EXPECT_LT(testing::RelativeError(f32[p], dequantized[p].get<std::vector<double>>()), 1e-4)
          << file << " decoded to f32, position " << p;
    }
  }
}

TEST(GgufFixtureTest, TruncatedBlocksAreOneLineErrors) {
  const RefFile& f = LoadRefs().File("tiny-q4_k_m.gguf");
  // The file cut in the middle of its last tensor's blocks.
  uint64_t last = 0;
  const RefTensor* cut = nullptr;
  for (const RefTensor& t : f.tensors) {
    if (t.offset >= last) {
      last = t.offset;
      cut = &t;
    }
  }
  ASSERT_NE(cut, nullptr);
  testing::TempDir dir;
  const std::string path = dir.File("cut.gguf");
  testing::WriteFile(path, std::string_view(f.bytes).substr(0, cut->offset + cut->bytes / 2));
  auto src = OpenGgufModel(path);
  ASSERT_FALSE(src.ok());
  const std::string msg(src.status().message());
  EXPECT_THAT(msg, HasSubstr(path + ": tensor '" + cut->name + "' data"));
  EXPECT_THAT(msg, HasSubstr("runs past the end of the file"));
  EXPECT_THAT(msg, Not(HasSubstr("\n")));
}

}  // namespace
}  // namespace paged
