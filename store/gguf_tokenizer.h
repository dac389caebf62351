// GGUF byte-level BPE vocabularies (tokenizer.ggml.model = "gpt2": Llama 3,
// Qwen2, SmolLM, GPT-2 files) as the HF tokenizer.json they were converted
// from, so that HfTokenizer serves them: tokenizer.ggml.tokens (+ token_type:
// CONTROL tokens become special added tokens, USER_DEFINED ones non-special
// added tokens) and tokenizer.ggml.merges make the BPE model;
// tokenizer.ggml.pre picks the pre-tokenizer llama.cpp uses for it.
#pragma once

#include <optional>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "common/tokenizer_bundle.h"
#include "store/gguf.h"

namespace paged {

// The tokenizer of a "gpt2" GGUF with config `c` (vocab size, bos, eos ids
// already read). nullopt when its tokenizer.ggml.pre is one we have no
// pre-tokenizer for (supported: llama-bpe / llama3 / llama-v3, qwen2, gpt-2,
// smollm). INVALID_ARGUMENT naming the file for malformed arrays.
absl::StatusOr<std::optional<TokenizerBundle>> GgufBpeTokenizer(const GgufFile& f,
                                                                const ModelConfig& c);

}  // namespace paged
