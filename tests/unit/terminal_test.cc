// pagectl's terminal helpers (client/pagectl/terminal.h): colour decisions,
// bars and progress lines rendered to strings, the progress display driven
// with explicit times; and the load-progress estimate of a segment
// (client/pagectl/load_progress.h) over an in-memory segment.
#include "client/pagectl/terminal.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "client/pagectl/load_progress.h"

namespace paged::pagectl {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(TerminalTest, ColourOnlyForATerminalWithoutNoColor) {
  EXPECT_TRUE(ColorWanted(true, nullptr, "xterm-256color"));
  EXPECT_TRUE(ColorWanted(true, nullptr, nullptr));
  EXPECT_FALSE(ColorWanted(false, nullptr, "xterm"));  // a pipe or a file
  EXPECT_FALSE(ColorWanted(true, "1", "xterm"));
  EXPECT_FALSE(ColorWanted(true, "", "xterm"));  // set, even empty: off
  EXPECT_FALSE(ColorWanted(true, nullptr, "dumb"));
}

TEST(TerminalTest, Paint) {
  EXPECT_EQ(Paint("READY", kGreen, true), "\033[32mREADY\033[0m");
  EXPECT_EQ(Paint("READY", kGreen, false), "READY");
  EXPECT_EQ(Paint("x", nullptr, true), "x");
  EXPECT_STREQ(FinishReasonColor("stop"), kGreen);
  EXPECT_STREQ(FinishReasonColor("eos"), kGreen);
  EXPECT_STREQ(FinishReasonColor("length"), kYellow);
  EXPECT_STREQ(FinishReasonColor("error"), kRed);
  EXPECT_EQ(FinishReasonColor("unspecified"), nullptr);
  EXPECT_STREQ(StateColor("ATTACHED"), kGreen);
  EXPECT_STREQ(StateColor("LOADING"), kYellow);
  EXPECT_STREQ(StateColor("GONE"), kRed);
}

TEST(TerminalTest, NotATerminalHasTheFallbackWidth) { EXPECT_EQ(TerminalColumns(-1, 77), 77); }

TEST(TerminalTest, BarsAtWidthsAndFractions) {
  EXPECT_EQ(RenderBar(0.0, 12), "[          ]");
  EXPECT_EQ(RenderBar(0.5, 12), "[#####>    ]");
  EXPECT_EQ(RenderBar(0.99, 12), "[#########>]");
  EXPECT_EQ(RenderBar(1.0, 12), "[##########]");
  EXPECT_EQ(RenderBar(2.0, 12), "[##########]");  // clamped
  EXPECT_EQ(RenderBar(-1.0, 6), "[    ]");
  EXPECT_EQ(RenderBar(std::nan(""), 6), "[    ]");
  EXPECT_EQ(RenderBar(0.25, 6), "[#>  ]");
  EXPECT_EQ(RenderBar(0.5, 1), "[ ]");  // at least 3 columns
  for (int w = 3; w < 50; ++w) {
    for (double f : {0.0, 0.1, 0.33, 0.5, 0.9, 1.0}) {
      EXPECT_EQ(RenderBar(f, w).size(), size_t(w)) << w << " " << f;
    }
  }
}

TEST(TerminalTest, ProgressLines) {
  const uint64_t GiB = 1ull << 30;
  // 80 columns: a 26-column bar (the numbers get 44).
  EXPECT_EQ(RenderProgressLine("loading", GiB, 4 * GiB, 850e6, 80),
            "loading [######>" + std::string(17, ' ') + "]   25%  1.00 GiB / 4.00 GiB  850.0 MB/s");
  // The bar does not move as the numbers change.
  EXPECT_EQ(RenderProgressLine("loading", 3 * GiB, 4 * GiB, 0, 80).find(']'),
            RenderProgressLine("loading", 1023 * (GiB >> 10), 4 * GiB, 99.9e6, 80).find(']'));
  // At most 40 columns wide.
  EXPECT_EQ(RenderProgressLine("loading", GiB, 4 * GiB, 0, 200).find(']'), 8u + 39);
  // Narrow: the bar shrinks, then goes.
  const std::string narrow = RenderProgressLine("loading", GiB, 4 * GiB, 0, 70);
  EXPECT_LE(narrow.size(), 70u);
  EXPECT_THAT(narrow, StartsWith("loading [###>"));
  EXPECT_EQ(RenderProgressLine("loading", GiB, 4 * GiB, 0, 20),
            "loading   25%  1.00 GiB / 4.00 GiB");
  // Unknown total: no bar, no percentage.
  EXPECT_EQ(RenderProgressLine("loading", 1536, 0, 0, 80), "loading  1.50 KiB");
  EXPECT_EQ(RenderProgressLine("x", 4 * GiB, 4 * GiB, 0, 60),
            "x [##########]  100%  4.00 GiB / 4.00 GiB");
}

struct Captured {
  std::vector<std::string> writes;
  ProgressDisplay::Writer writer() {
    return [this](const std::string& s) { writes.push_back(s); };
  }
};

TEST(ProgressDisplayTest, ATerminalRedrawsOneLineAtMostTenTimesASecond) {
  Captured out;
  {
    ProgressDisplay d(out.writer(), /*terminal=*/true, 80);
    d.Update("load", 0, 100, 0.0);
    d.Update("load", 10, 100, 0.05);  // too soon: skipped
    d.Update("load", 50, 100, 1.0);
    d.Finish("done");
  }
  ASSERT_EQ(out.writes.size(), 4u);
  EXPECT_THAT(out.writes[0], StartsWith("\rload ["));
  EXPECT_THAT(out.writes[0], HasSubstr("0%  0 B / 100 B"));
  EXPECT_THAT(out.writes[0], ::testing::EndsWith("\033[K"));
  EXPECT_THAT(out.writes[1], HasSubstr("50%  50 B / 100 B  50 B/s"));  // 50 bytes in 1 s
  EXPECT_LE(out.writes[1].size(), size_t(1 + 79 + 3));  // "\r" + line + clear: one column free
  EXPECT_EQ(out.writes[2], "\r\033[K");
  EXPECT_EQ(out.writes[3], "done\n");
}

TEST(ProgressDisplayTest, APipeGetsPlainLinesNowAndThen) {
  Captured out;
  ProgressDisplay d(out.writer(), /*terminal=*/false, 80, /*plain_every_s=*/5.0);
  d.Note("waiting for the segment", 0.0);
  d.Note("waiting for the segment", 1.0);  // same note: nothing
  d.Update("load", 10, 100, 2.0);          // new label: shown
  d.Update("load", 20, 100, 3.0);          // within 5 s: nothing
  d.Update("load", 90, 100, 8.0);          // 5 s later: shown
  d.Note("waiting for a worker", 8.5);
  d.Finish("ready");
  ASSERT_EQ(out.writes.size(), 5u);
  EXPECT_EQ(out.writes[0], "waiting for the segment\n");
  EXPECT_THAT(out.writes[1], StartsWith("load ["));
  EXPECT_THAT(out.writes[1], HasSubstr(" 10%"));
  // The rate over the last 3 s or more: 70 B from 3.0 to 8.0 s.
  EXPECT_THAT(out.writes[2], HasSubstr(" 90%  90 B / 100 B  14 B/s"));
  EXPECT_EQ(out.writes[3], "waiting for a worker\n");
  EXPECT_EQ(out.writes[4], "ready\n");
  for (const std::string& w : out.writes) EXPECT_EQ(w.find('\033'), std::string::npos);
}

// ---- load progress ----

TEST(LoadProgressTest, TheHeaderSaysHowFarTheStoreIs) {
  auto owned = std::make_unique<SegmentHeader>();  // large: not on the stack
  SegmentHeader& h = *owned;
  h.n_global_tensors = 2;
  h.global_tensors[0].bytes = 1000;
  h.global_tensors[1].bytes = 500;
  h.model.n_layers = 3;
  for (int l = 0; l < 3; ++l) {  // layers may differ (mixed types)
    h.layers[l].n_tensors = 2;
    h.layers[l].tensors[0].bytes = 2000;
    h.layers[l].tensors[1].bytes = 800 + uint64_t(l);
    h.layers[l].tensors[1].scale_bytes = 100;
  }
  const uint64_t total = 1500 + 3 * 2900 + 0 + 1 + 2;
  h.state = uint32_t(SegmentState::kLoading);
  h.loaded_bytes = 4400;
  LoadProgress p = ProgressOf(h);
  EXPECT_EQ(p.state, "LOADING");
  EXPECT_EQ(p.done, 4400u);
  EXPECT_EQ(p.total, total);
  h.loaded_bytes = ~0ull;  // never past the total
  EXPECT_EQ(ProgressOf(h).done, total);
  h.state = uint32_t(SegmentState::kReady);
  h.loaded_bytes = 0;
  EXPECT_EQ(ProgressOf(h).done, total);
  h.layers[0].n_tensors = 1u << 30;  // counts are clamped: the header is not validated
  h.model.n_layers = 1 << 30;
  EXPECT_GT(ProgressOf(h).total, 0u);
}

TEST(LoadProgressTest, AMissingSegmentIsNotFound) {
  EXPECT_EQ(ReadLoadProgress("paged-no-such-segment-for-test").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace paged::pagectl
