// The harness of the llama.cpp-oracle fixture tests (tests/golden/arch/:
// arch_fixture_test, moe_gguf_fixture_test): a model's decode and prefill
// logits against expected ones, and the pager against the resident provider.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace paged::testing {

struct FixtureLogits {
  std::vector<std::vector<float>> decode;  // [position][vocab]
  double worst = 0;                        // largest relative error of `decode`
};

// Runs `tokens` through `model` (`format` weights on `device`) one decode
// step per token (teacher forcing), expecting every position within `tol`
// (relative error) of want[p], then in one prefill step, expecting its last
// position within `tol` of want.back(); failures name `what`. Fills `out`
// with the decode logits and their largest error. A model that does not
// run, or answers another number of positions or of logits, is a fatal
// failure (ASSERT_NO_FATAL_FAILURE stops the caller).
void ExpectDecodeAndPrefillMatch(const std::string& model, const std::string& format,
                                 const std::string& device, const std::vector<int32_t>& tokens,
                                 const std::vector<std::vector<double>>& want, double tol,
                                 const std::string& what, FixtureLogits* out);

// Through the pager (two slots, no resident layer: every layer is copied
// into a slot) the decode logits of `tokens` equal the resident provider's
// bit for bit, on the CPU reference backend. `format`: the segment's weight
// format; `build_threads`: OwnedImage::Build's (0: its default).
void ExpectPagedEqualsResident(const std::string& model, const std::string& format,
                               const std::vector<int32_t>& tokens, int build_threads = 0);

}  // namespace paged::testing
