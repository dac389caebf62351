// The tokenizer files of an HF checkpoint directory, read into the bundle the
// segment carries (common/tokenizer_bundle.h):
//   tokenizer.json          the tokenizer (HfTokenizer); absent: ids only
//   tokenizer_config.json   bos_token, eos_token, add_bos_token, chat_template
//                           (a string, or a list of {name, template}: "default")
//   chat_template.jinja     the chat template, when tokenizer_config has none
//   generation_config.json  eos_token_id (an int or a list): more turn ends
// Each present file is validated here (the tokenizer is built once), so a
// malformed one fails the load with one line naming the file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer_bundle.h"

namespace paged {

struct HfTokenizerFiles {
  TokenizerBundle bundle;          // kind kNone when there is no tokenizer.json
  std::vector<int32_t> eos_ids;    // the tokenizer's end-of-sequence ids
  std::vector<std::string> files;  // names of the files read (for the fingerprint)
};

absl::StatusOr<HfTokenizerFiles> ReadHfTokenizerFiles(const std::string& dir);

}  // namespace paged
