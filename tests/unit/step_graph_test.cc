// Step graphs (docs/engine.md): decode steps on a fixed provider recorded
// once and replayed. The recording backend (recording_backend.h) replays
// each op with the arguments it was recorded with, as a CUDA graph does, so
// these tests fail if anything a decode step changes reaches an op as an
// argument rather than as data in backend memory.
#include <gtest/gtest.h>

#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "tests/unit/recording_backend.h"
#include "tests/unit/test_util.h"
#include "tokenizer/sp_tokenizer.h"
#include "worker/engine/engine.h"
#include "worker/engine/generator.h"
#include "worker/offline/local_model.h"

namespace paged {
namespace {

// The stories260K model, resident, on the CPU backend; with `record`, that
// backend inside a RecordingBackend.
struct Model {
  std::unique_ptr<LocalModel> m;
  testing::RecordingBackend* rec = nullptr;
};

Model Load(const std::string& path, bool record) {
  LayoutOptions layout;
  layout.weight_format = "f32";
  layout.kv_gib = 0.02;
  auto m = LocalModel::Load(path, layout, "cpu", 2);
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return {};
  Model out;
  out.m = std::move(*m);
  if (record) {
    out.m->engine.reset();
    out.m->provider.reset();
    auto rec = std::make_unique<testing::RecordingBackend>(std::move(out.m->backend));
    out.rec = rec.get();
    out.m->backend = std::move(rec);
    auto p = ResidentProvider::Create(out.m->backend.get(), out.m->image->image());
    EXPECT_TRUE(p.ok()) << p.status();
    out.m->provider = std::move(*p);
    out.m->engine =
        std::make_unique<Engine>(out.m->backend.get(), out.m->provider.get(), out.m->config(),
                                 int(out.m->image->image().header->block_tokens));
  }
  return out;
}

class StepGraphTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = testing::Stories260KPath();
    PAGED_REQUIRE_FIXTURE(path_, "../shared/models/stories260K.gguf");
  }
  std::string path_;
};

GenerateResult Greedy(Engine& e, int n, uint64_t blocks) {
  GenerateRequest req;
  req.prompt = {1};
  req.max_new_tokens = n;
  req.stop_at_eos = false;
  req.record_logits = true;
  auto r = Generate(e, req, blocks);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : GenerateResult{};
}

// 300 greedy tokens from BOS, one sequence: every step is a decode step of
// one row (the first feeds BOS at position 0). Contexts 1..256 share a
// recording, 257..300 the next: each bucket's first step runs plainly, its
// second is recorded, the rest replay it.
TEST_F(StepGraphTest, ReplayedStepsGiveTheTranscriptAndThePlainLogitsBitForBit) {
  Model plain = Load(path_, false), graphed = Load(path_, true);
  ASSERT_TRUE(plain.m && graphed.m);
  const GenerateResult want = Greedy(*plain.m->engine, 300, plain.m->kv_blocks());
  const GenerateResult got = Greedy(*graphed.m->engine, 300, graphed.m->kv_blocks());
  ASSERT_EQ(got.tokens.size(), 300u);
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_EQ(got.chosen_logits, want.chosen_logits);
  auto tok = SpTokenizer::Create(graphed.m->image->vocab());
  ASSERT_TRUE(tok.ok());
  std::vector<int32_t> first = {1};
  first.insert(first.end(), got.tokens.begin(), got.tokens.begin() + 200);
  EXPECT_EQ(tok->Decode(first), testing::StoriesTranscript());

  const Engine::GraphStats& s = graphed.m->engine->graph_stats();
  EXPECT_TRUE(s.error.ok()) << s.error;
  EXPECT_EQ(s.recorded, 2);
  EXPECT_EQ(s.replayed, (256 - 2) + (300 - 256 - 2));
  EXPECT_EQ(graphed.rec->replays(), s.replayed);
  EXPECT_GT(graphed.rec->recorded_ops(), 0);
  // The plain CPU backend records nothing.
  EXPECT_EQ(plain.m->engine->graph_stats().recorded, 0);
  EXPECT_EQ(plain.m->engine->graph_stats().replayed, 0);
}

// A prompt prefilled in chunks of 3 rows: those steps are not recorded (a
// recording is of one row per sequence); the last chunk, of one row, and
// the decode steps after it are.
TEST_F(StepGraphTest, PrefillChunksRunPlainly) {
  Model plain = Load(path_, false), graphed = Load(path_, true);
  ASSERT_TRUE(plain.m && graphed.m);
  auto run = [](Engine& e, uint64_t blocks) {
    GenerateRequest req;
    req.prompt = {1, 400, 261, 378, 432, 383, 286};
    req.max_new_tokens = 20;
    req.stop_at_eos = false;
    req.prefill_chunk = 3;
    req.record_logits = true;
    auto r = Generate(e, req, blocks);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : GenerateResult{};
  };
  const GenerateResult want = run(*plain.m->engine, plain.m->kv_blocks());
  const GenerateResult got = run(*graphed.m->engine, graphed.m->kv_blocks());
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_EQ(got.chosen_logits, want.chosen_logits);
  // Steps of 3, 3, then 1 row (the last prompt token) and 19 decode steps.
  EXPECT_EQ(graphed.m->engine->graph_stats().recorded, 1);
  EXPECT_EQ(graphed.m->engine->graph_stats().replayed, 18);
}

// Sequences join one by one (prefill steps mixed with decode steps run
// plainly), then decode together, sampled with temperature and top-k (the
// positions that seed each row's draw are data the replay must read anew),
// with a long prompt joining midway (its step grows the engine's scratch:
// the recordings are dropped and made again).
std::vector<std::vector<int32_t>> Staggered(Engine& e, uint64_t pool) {
  const int bt = e.block_tokens();
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> tok(3, 511);
  const std::vector<int> prompt_lens = {5, 1, 9, 3, 40};
  const std::vector<int> join_at = {0, 1, 2, 3, 20};
  const int n_gen = 30;
  std::vector<int32_t> ids(pool);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(5));
  std::vector<SeqStep> seqs(prompt_lens.size());
  size_t next_block = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    seqs[i].seq_id = int64_t(i) + 10;
    seqs[i].tokens.push_back(1);
    for (int k = 1; k < prompt_lens[i]; ++k) seqs[i].tokens.push_back(tok(rng));
    seqs[i].sampling.temperature = 0.9f;
    seqs[i].sampling.top_k = 40;
    seqs[i].sampling.seed = 1000 + i;
    const int need = (prompt_lens[i] + n_gen + bt - 1) / bt;
    for (int b = 0; b < need; ++b) seqs[i].block_table.push_back(ids[next_block++]);
  }
  std::vector<std::vector<int32_t>> got(seqs.size());
  for (int step = 0; step < 60; ++step) {
    StepBatch batch;
    std::vector<size_t> which;
    for (size_t i = 0; i < seqs.size(); ++i) {
      if (join_at[i] > step || int(got[i].size()) >= n_gen) continue;
      batch.seqs.push_back(seqs[i]);
      which.push_back(i);
    }
    if (batch.seqs.empty()) break;
    auto out = e.Step(batch);
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok()) break;
    testing::FeedBack(*out, which, &seqs, &got);
  }
  return got;
}

TEST_F(StepGraphTest, StaggeredSampledBatchesReplayAndMatchThePlainRun) {
  Model plain = Load(path_, false), graphed = Load(path_, true);
  ASSERT_TRUE(plain.m && graphed.m);
  const auto want = Staggered(*plain.m->engine, plain.m->kv_blocks());
  const auto got = Staggered(*graphed.m->engine, graphed.m->kv_blocks());
  ASSERT_EQ(want.size(), 5u);
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(want[i].size(), 30u);
    EXPECT_EQ(got[i], want[i]) << "sequence " << i;
  }
  const Engine::GraphStats& s = graphed.m->engine->graph_stats();
  EXPECT_TRUE(s.error.ok()) << s.error;
  // Batches of 4 (steps 4..19), then 4 again after the long prompt's step
  // grew the scratch (steps 21..), then 1 (the long prompt alone): each
  // recorded once, the rest replayed.
  EXPECT_GE(s.recorded, 3);
  EXPECT_GT(s.replayed, 20);
}

// A recording that fails (as a capture meeting an unsupported call) leaves
// the step to run plainly, with the same tokens, and turns recording off.
TEST_F(StepGraphTest, AFailedRecordingRunsThePlainStepAndStopsRecording) {
  Model plain = Load(path_, false), graphed = Load(path_, true);
  ASSERT_TRUE(plain.m && graphed.m);
  graphed.rec->FailNextRecording();
  const GenerateResult want = Greedy(*plain.m->engine, 40, plain.m->kv_blocks());
  const GenerateResult got = Greedy(*graphed.m->engine, 40, graphed.m->kv_blocks());
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_EQ(got.chosen_logits, want.chosen_logits);
  const Engine::GraphStats& s = graphed.m->engine->graph_stats();
  EXPECT_FALSE(s.error.ok());
  EXPECT_EQ(s.recorded, 0);
  EXPECT_EQ(s.replayed, 0);
  EXPECT_EQ(graphed.rec->graphs(), 0u);
}

// The backend's own scratch moving (LaunchGraph false) makes the engine run
// the step plainly and record it again; set_graphs(false) stops recording.
TEST_F(StepGraphTest, ARecordingTheBackendDroppedIsMadeAgain) {
  Model plain = Load(path_, false), graphed = Load(path_, true);
  ASSERT_TRUE(plain.m && graphed.m);
  const GenerateResult want = Greedy(*plain.m->engine, 60, plain.m->kv_blocks());
  Engine& e = *graphed.m->engine;
  GenerateRequest req;
  req.prompt = {1};
  req.max_new_tokens = 60;
  req.stop_at_eos = false;
  req.record_logits = true;
  int step = 0;
  auto r = Generate(e, req, graphed.m->kv_blocks(), [&](int32_t) {
    if (++step == 30) graphed.rec->InvalidateGraphs();
  });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->tokens, want.tokens);
  EXPECT_EQ(r->chosen_logits, want.chosen_logits);
  // Steps 1, 2 (plain, recorded), 3..30 replayed; 31 plain, 32 recorded,
  // 33..60 replayed.
  EXPECT_EQ(e.graph_stats().recorded, 2);
  EXPECT_EQ(e.graph_stats().replayed, 28 + 28);

  Model off = Load(path_, true);
  ASSERT_TRUE(off.m);
  off.m->engine->set_graphs(false);
  const GenerateResult g = Greedy(*off.m->engine, 20, off.m->kv_blocks());
  EXPECT_EQ(g.tokens, std::vector<int32_t>(want.tokens.begin(), want.tokens.begin() + 20));
  EXPECT_EQ(off.m->engine->graph_stats().recorded, 0);
  EXPECT_EQ(off.rec->replays(), 0);
}

}  // namespace
}  // namespace paged
