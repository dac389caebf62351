// libFuzzer entry point for HF tokenizers: a tokenizer.json (input starting
// with '{') must load or fail with an error, and a tokenizer that loads must
// encode and decode any text; other inputs are text for the fixtures'
// tokenizers (tests/golden/tokenizers), any bytes, valid UTF-8 or not. Never
// a crash, a hang or an id outside the vocabulary.
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/hf_tokenizer.h"

namespace {

std::vector<std::unique_ptr<paged::HfTokenizer>> LoadFixtures() {
  std::vector<std::unique_ptr<paged::HfTokenizer>> out;
  for (const char* name : {"llama3_bpe", "qwen2_bpe", "llama2_spbpe", "metaspace_spbpe"}) {
    std::ifstream in(std::string(PAGED_ROOT) + "/tests/golden/tokenizers/" + name +
                     "/tokenizer.json");
    std::stringstream s;
    s << in.rdbuf();
    auto t = paged::HfTokenizer::Create(s.str(), {}, name);
    if (t.ok()) out.push_back(*std::move(t));
  }
  return out;
}

void Exercise(const paged::HfTokenizer& t, std::string_view text) {
  for (bool special : {false, true}) {
    const std::vector<int32_t> ids = t.Encode(text, true, special);
    for (int32_t id : ids) {
      if (id < 0 || size_t(id) >= t.vocab_size()) __builtin_trap();
    }
    t.Decode(ids);
    int32_t prev = paged::Tokenizer::kStartOfSequence;
    for (int32_t id : ids) {
      t.DecodePiece(prev, id);
      prev = id;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (!input.empty() && input[0] == '{') {
    auto t = paged::HfTokenizer::Create(input, {}, "fuzz.json");
    if (t.ok()) Exercise(**t, "Hello, world! 123 \xE6\x97\xA5 <s> \xFF");
    return 0;
  }
  static const auto* fixtures =
      new std::vector<std::unique_ptr<paged::HfTokenizer>>(LoadFixtures());
  for (const auto& t : *fixtures) Exercise(*t, input);
  return 0;
}
