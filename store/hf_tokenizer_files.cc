#include "store/hf_tokenizer_files.h"

#include <filesystem>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "store/mapped_file.h"
#include "store/safetensors.h"
#include "tokenizer/hf_tokenizer.h"

namespace paged {
namespace {

using nlohmann::json;

absl::StatusOr<std::string> ReadText(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> f, MappedFile::Open(path));
  if (f->size() == 0) return std::string();
  return std::string(reinterpret_cast<const char*>(f->data()), size_t(f->size()));
}

absl::StatusOr<json> ReadJsonObject(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, ReadText(path));
  absl::StatusOr<json> j = ParseJsonText(text, "the file");
  if (!j.ok()) return Annotate(j.status(), path);
  if (!j->is_object())
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": is ", JsonTypeName(*j), ", expected a JSON object"));
  return j;
}

// A token setting: "text", {"content": "text", ...} (an AddedToken), or null.
absl::StatusOr<std::string> TokenSetting(const json& config, const char* key,
                                         const std::string& path) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::string();
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) return c->get<std::string>();
  }
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": '", key, "' is ", JsonTypeName(*it), ", expected a token string"));
}

// "chat_template": a string, or [{"name": ..., "template": ...}] of which
// "default" is the one a plain chat uses.
absl::StatusOr<std::string> ChatTemplate(const json& config, const std::string& path) {
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) return std::string();
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    for (const json& t : *it) {
      if (!t.is_object() || !t.contains("name") || !t.contains("template") ||
          !t["name"].is_string() || !t["template"].is_string())
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": 'chat_template' lists an entry that is not {name, template}"));
      if (t["name"].get<std::string>() == "default") return t["template"].get<std::string>();
    }
    return std::string();  // named templates only (tool_use, rag): none for plain chat
  }
  return absl::InvalidArgumentError(absl::StrCat(path, ": 'chat_template' is ", JsonTypeName(*it),
                                                 ", expected a string or a list"));
}

}  // namespace

absl::StatusOr<HfTokenizerFiles> ReadHfTokenizerFiles(const std::string& dir) {
  namespace fs = std::filesystem;
  auto path_of = [&](const char* name) { return (fs::path(dir) / name).string(); };
  auto exists = [&](const char* name) {
    std::error_code ec;
    return fs::exists(path_of(name), ec);
  };
  HfTokenizerFiles out;
  HfTokenizerOptions options;
  std::string chat_template;

  if (exists("tokenizer_config.json")) {
    const std::string path = path_of("tokenizer_config.json");
    ASSIGN_OR_RETURN(const json config, ReadJsonObject(path));
    ASSIGN_OR_RETURN(options.bos_token, TokenSetting(config, "bos_token", path));
    ASSIGN_OR_RETURN(options.eos_token, TokenSetting(config, "eos_token", path));
    if (auto it = config.find("add_bos_token"); it != config.end() && !it->is_null()) {
      if (!it->is_boolean())
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": 'add_bos_token' is ", JsonTypeName(*it), ", expected a boolean"));
      options.add_bos_token = it->get<bool>();
    }
    ASSIGN_OR_RETURN(chat_template, ChatTemplate(config, path));
    out.files.push_back("tokenizer_config.json");
  }
  if (chat_template.empty() && exists("chat_template.jinja")) {
    ASSIGN_OR_RETURN(chat_template, ReadText(path_of("chat_template.jinja")));
    out.files.push_back("chat_template.jinja");
  }
  if (exists("generation_config.json")) {
    const std::string path = path_of("generation_config.json");
    ASSIGN_OR_RETURN(const json gen, ReadJsonObject(path));
    if (auto it = gen.find("eos_token_id"); it != gen.end() && !it->is_null()) {
      const json list = it->is_array() ? *it : json::array({*it});
      for (const json& id : list) {
        const std::optional<uint64_t> v = JsonToU64(id);
        if (!v || *v > uint64_t(INT32_MAX))
          return absl::InvalidArgumentError(
              absl::StrCat(path, ": 'eos_token_id' holds ", id.dump(), ", expected token ids"));
        options.eos_token_ids.push_back(int32_t(*v));
      }
    }
    out.files.push_back("generation_config.json");
  }
  out.bundle.chat_template = std::move(chat_template);
  if (!exists("tokenizer.json")) return out;

  const std::string path = path_of("tokenizer.json");
  ASSIGN_OR_RETURN(std::string text, ReadText(path));
  ASSIGN_OR_RETURN(std::unique_ptr<HfTokenizer> tok, HfTokenizer::Create(text, options, path));
  if (!options.bos_token.empty() && tok->PieceToId(options.bos_token) < 0)
    return absl::InvalidArgumentError(
        absl::StrCat(path_of("tokenizer_config.json"), ": bos_token '",
                     absl::CEscape(options.bos_token), "' is not a token of tokenizer.json"));
  if (!options.eos_token.empty() && tok->PieceToId(options.eos_token) < 0)
    return absl::InvalidArgumentError(
        absl::StrCat(path_of("tokenizer_config.json"), ": eos_token '",
                     absl::CEscape(options.eos_token), "' is not a token of tokenizer.json"));
  out.eos_ids = tok->eos_ids();
  out.files.push_back("tokenizer.json");
  out.bundle.kind = TokenizerKind::kHfJson;
  out.bundle.payload = std::move(text);
  out.bundle.options = options.ToJson();
  return out;
}

}  // namespace paged
