// The engine on the CPU reference backend: the real stories260K transcript,
// batching and paging invariants, input validation.
#include "worker/engine/engine.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "tests/unit/test_util.h"
#include "tokenizer/sp_tokenizer.h"
#include "worker/engine/generator.h"
#include "worker/offline/local_model.h"

namespace paged {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<LocalModel> Load(const std::string& path, const std::string& format,
                                 double kv_gib = 0.01) {
  LayoutOptions layout;
  layout.weight_format = format;
  layout.kv_gib = kv_gib;
  auto m = LocalModel::Load(path, layout, "cpu", 2);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

class StoriesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = testing::Stories260KPath();
    PAGED_REQUIRE_FIXTURE(path_, "../shared/models/stories260K.gguf");
  }
  std::string path_;
};

TEST_F(StoriesTest, GreedyTranscriptMatchesTheReadmeExactlyInF32) {
  auto m = Load(path_, "f32");
  GenerateRequest req;
  req.prompt = {1};
  req.max_new_tokens = 200;
  req.stop_at_eos = false;
  req.record_logits = true;
  auto r = Generate(*m->engine, req, m->kv_blocks());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->tokens.size(), 200u);
  const std::vector<int32_t> first = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421};
  EXPECT_EQ(std::vector<int32_t>(r->tokens.begin(), r->tokens.begin() + 12), first);
  EXPECT_NEAR(r->chosen_logits[0], 17.023516f, 1e-4);
  EXPECT_NEAR(r->chosen_logits[1], 18.459986f, 1e-4);
  EXPECT_NEAR(r->chosen_logits[2], 17.136963f, 1e-4);
  auto tok = SpTokenizer::Create(m->image->vocab());
  ASSERT_TRUE(tok.ok());
  std::vector<int32_t> all = {1};
  all.insert(all.end(), r->tokens.begin(), r->tokens.end());
  EXPECT_EQ(tok->Decode(all), testing::StoriesTranscript());
}

TEST_F(StoriesTest, GreedyTranscriptMatchesInF16Storage) {
  auto m = Load(path_, "f16");
  GenerateRequest req;
  req.prompt = {1};
  req.max_new_tokens = 200;
  req.stop_at_eos = false;
  auto r = Generate(*m->engine, req, m->kv_blocks());
  ASSERT_TRUE(r.ok()) << r.status();
  auto tok = SpTokenizer::Create(m->image->vocab());
  std::vector<int32_t> all = {1};
  all.insert(all.end(), r->tokens.begin(), r->tokens.end());
  EXPECT_EQ(tok->Decode(all), testing::StoriesTranscript());
}

// Runs one sequence alone, greedy, chunked prefill of `chunk`.
std::vector<int32_t> RunAlone(Engine& e, const std::vector<int32_t>& prompt, int n, int chunk,
                              uint64_t blocks) {
  GenerateRequest req;
  req.prompt = prompt;
  req.max_new_tokens = n;
  req.stop_at_eos = false;
  req.prefill_chunk = chunk;
  auto r = Generate(e, req, blocks);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->tokens : std::vector<int32_t>{};
}

TEST_F(StoriesTest, ChunkedPrefillGivesTheSameTokens) {
  auto m = Load(path_, "f32");
  auto tok = SpTokenizer::Create(m->image->vocab());
  const auto prompt =
      tok->Encode("Once upon a time, there was a big dog who loved to run in the park.", true);
  const uint64_t blocks = m->kv_blocks();
  const auto whole = RunAlone(*m->engine, prompt, 40, 1000, blocks);
  EXPECT_EQ(RunAlone(*m->engine, prompt, 40, 5, blocks), whole);
  EXPECT_EQ(RunAlone(*m->engine, prompt, 40, 1, blocks), whole);
}

TEST_F(StoriesTest, ABatchOfSequencesOnScatteredBlocksMatchesEachAlone) {
  auto m = Load(path_, "f32");
  auto tok = SpTokenizer::Create(m->image->vocab());
  const uint64_t pool = m->kv_blocks();
  const std::vector<std::string> texts = {
      "Lily wanted to play", "The cat sat on the mat and looked at the sun.", "One day",
      "Tom and his mom went to the store to buy some apples."};
  const int n_gen = 30;
  std::vector<std::vector<int32_t>> want;
  for (const auto& t : texts)
    want.push_back(RunAlone(*m->engine, tok->Encode(t, true), n_gen, 1000, pool));

  // Give each sequence blocks scattered over the pool, then run them together:
  // prefill of one sequence joins decodes of others (continuous batching).
  const int bt = m->engine->block_tokens();
  std::vector<int32_t> ids(pool);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(5));
  std::vector<SeqStep> seqs(texts.size());
  size_t next_block = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    seqs[i].seq_id = int64_t(i) + 100;
    const auto prompt = tok->Encode(texts[i], true);
    seqs[i].tokens = prompt;
    const int need = (int(prompt.size()) + n_gen + bt - 1) / bt;
    for (int b = 0; b < need; ++b) seqs[i].block_table.push_back(ids[next_block++]);
  }
  std::vector<std::vector<int32_t>> got(texts.size());
  // Sequence i starts at step i (staggered), so steps mix prefill and decode.
  for (int step = 0; step < n_gen + int(texts.size()); ++step) {
    StepBatch batch;
    std::vector<size_t> which;
    for (size_t i = 0; i < texts.size(); ++i) {
      if (int(i) > step || int(got[i].size()) >= n_gen) continue;
      batch.seqs.push_back(seqs[i]);
      which.push_back(i);
    }
    if (batch.seqs.empty()) continue;
    auto out = m->engine->Step(batch);
    ASSERT_TRUE(out.ok()) << out.status();
    testing::FeedBack(*out, which, &seqs, &got);
  }
  for (size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(got[i], want[i]) << texts[i];
}

// A step larger than the engine's chunk (kEngineChunkTokens rows) runs each
// layer chunk by chunk, with a sequence split across chunks: its results
// equal those of separate steps.
TEST_F(StoriesTest, AStepLargerThanAChunkMatchesSeparateSteps) {
  auto m = Load(path_, "f32", 0.05);
  const int len = 800;  // 3 x 800 rows: the third sequence spans the 2048-row chunk boundary
  std::mt19937 rng(11);
  std::uniform_int_distribution<int32_t> tok(3, 511);
  std::vector<SeqStep> seqs(3);
  for (int i = 0; i < 3; ++i) {
    seqs[size_t(i)].seq_id = i;
    seqs[size_t(i)].tokens.push_back(1);
    for (int k = 1; k < len; ++k) seqs[size_t(i)].tokens.push_back(tok(rng));
    for (int b = 0; b < (len + 15) / 16; ++b) seqs[size_t(i)].block_table.push_back(i * 64 + b);
    seqs[size_t(i)].return_logits = true;
  }
  auto together = m->engine->Step(StepBatch{seqs});
  ASSERT_TRUE(together.ok()) << together.status();
  for (int i = 0; i < 3; ++i) {
    auto alone = m->engine->Step(StepBatch{{seqs[size_t(i)]}});
    ASSERT_TRUE(alone.ok());
    EXPECT_EQ(together->next_tokens[size_t(i)], alone->next_tokens[0]) << i;
    float max_diff = 0;
    for (size_t k = 0; k < alone->logits[0].size(); ++k)
      max_diff =
          std::max(max_diff, std::fabs(together->logits[size_t(i)][k] - alone->logits[0][k]));
    EXPECT_LT(max_diff, 1e-4) << i;
  }
}

TEST_F(StoriesTest, SameSeedSameTokensAndSeedsDiffer) {
  auto m = Load(path_, "f32");
  const uint64_t pool = m->kv_blocks();
  auto sample = [&](uint64_t seed) {
    GenerateRequest req;
    req.prompt = {1};
    req.max_new_tokens = 40;
    req.stop_at_eos = false;
    req.sampling = SamplingParams{0.9f, 40, 0.95f, seed};
    auto r = Generate(*m->engine, req, pool);
    EXPECT_TRUE(r.ok()) << r.status();
    return r->tokens;
  };
  EXPECT_EQ(sample(7), sample(7));
  EXPECT_NE(sample(7), sample(8));
}

TEST_F(StoriesTest, BadStepsAreInvalidArgumentAndRunNothing) {
  auto m = Load(path_, "f32");
  const int bt = m->engine->block_tokens();
  auto base = [&] {
    StepBatch b;
    SeqStep s;
    s.seq_id = 1;
    s.tokens = {1, 403};
    s.block_table = {0};
    b.seqs.push_back(s);
    return b;
  };
  struct Case {
    std::function<void(StepBatch&)> mutate;
    std::string want;
  };
  const std::vector<Case> cases = {
      {[](StepBatch& b) { b.seqs.clear(); }, "empty batch"},
      {[](StepBatch& b) { b.seqs[0].tokens = {}; }, "no tokens"},
      {[](StepBatch& b) {
         b.seqs[0].tokens = {1, 512};
       },
       "token id 512 outside the vocabulary"},
      {[](StepBatch& b) { b.seqs[0].tokens = {-1}; }, "token id -1"},
      {[&](StepBatch& b) { b.seqs[0].start_pos = bt; }, "KV blocks for"},
      {[](StepBatch& b) { b.seqs[0].block_table = {1 << 30}; }, "outside the pool"},
      {[](StepBatch& b) { b.seqs[0].start_pos = 1 << 20; }, "outside the context"},
      {[](StepBatch& b) { b.seqs[0].sampling.temperature = -1; }, "temperature"},
      {[](StepBatch& b) { b.seqs[0].sampling.top_p = 0; }, "top_p"},
      {[](StepBatch& b) { b.seqs[0].sampling.top_k = -3; }, "top_k"},
      {[](StepBatch& b) { b.seqs.push_back(b.seqs[0]); }, "appears twice"},
  };
  for (const Case& c : cases) {
    StepBatch b = base();
    c.mutate(b);
    auto out = m->engine->Step(b);
    ASSERT_FALSE(out.ok()) << c.want;
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(out.status().message()), HasSubstr(c.want));
  }
  // The engine still works after all that.
  EXPECT_TRUE(m->engine->Step(base()).ok());
}

}  // namespace
}  // namespace paged
