#include "common/config_file.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"

namespace paged {
namespace {

constexpr std::string_view kSections[] = {"global", "store", "worker", "coordinator"};

std::string_view Trim(std::string_view s) {
  const absl::string_view t = absl::StripAsciiWhitespace(absl::string_view(s.data(), s.size()));
  return std::string_view(t.data(), t.size());
}

bool ValidKey(std::string_view key) {
  return !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
  });
}

bool Contains(const std::string_view* begin, const std::string_view* end, std::string_view s) {
  return std::find(begin, end, s) != end;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ParseConfigText(std::string_view text,
                                                         const std::string& file,
                                                         std::string_view section,
                                                         const IsFlagFn& is_flag) {
  std::vector<std::string> global_args, section_args;
  std::string current;              // "" before the first section header
  std::map<std::string, int> seen;  // "section/key" -> line
  int line_no = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = Trim(text.substr(pos, end - pos));
    pos = end + 1;
    ++line_no;
    const std::string where = absl::StrCat(file, ":", line_no, ": ");
    if (line.empty() || line[0] == '#') continue;
    if (line.front() == '[') {
      if (line.back() != ']')
        return absl::InvalidArgumentError(absl::StrCat(where, "expected [section]"));
      const std::string_view name = Trim(line.substr(1, line.size() - 2));
      if (!Contains(std::begin(kSections), std::end(kSections), name)) {
        return absl::InvalidArgumentError(absl::StrCat(where, "unknown section [",
                                                       std::string(name),
                                                       "] (global, store, worker, coordinator)"));
      }
      current = std::string(name);
      continue;
    }
    const size_t eq = line.find('=');
    if (eq == std::string_view::npos)
      return absl::InvalidArgumentError(absl::StrCat(where, "expected key = value"));
    const std::string key =
        absl::StrReplaceAll(std::string(Trim(line.substr(0, eq))), {{"_", "-"}});
    std::string_view value = Trim(line.substr(eq + 1));
    if (!ValidKey(key)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "bad key '", key, "' (letters, digits, '-')"));
    }
    if (current.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "'", key, "' outside a section ([global], [store], ...)"));
    }
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
      value = value.substr(1, value.size() - 2);
    if (key == "config")
      return absl::InvalidArgumentError(absl::StrCat(where, "'config' cannot be set in the file"));
    const auto [it, inserted] = seen.emplace(current + "/" + key, line_no);
    if (!inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "'", key, "' already set in [", current, "] on line ", it->second));
    }
    const std::string flag = absl::StrReplaceAll(key, {{"-", "_"}});
    const std::string arg = absl::StrCat("--", key, "=", std::string(value));
    if (current == "global") {
      if (!Contains(std::begin(kGlobalConfigKeys), std::end(kGlobalConfigKeys), key)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "unknown key '", key,
                         "' in [global] (only segment, token, token-file and log-level; put it in "
                         "a binary's section)"));
      }
      if (is_flag(flag)) global_args.push_back(arg);
    } else if (current == section) {
      if (!is_flag(flag)) {
        return absl::InvalidArgumentError(absl::StrCat(where, "unknown key '", key, "' in [",
                                                       current, "] (no flag --", key, ")"));
      }
      section_args.push_back(arg);
    }
  }
  global_args.insert(global_args.end(), section_args.begin(), section_args.end());
  return global_args;
}

absl::StatusOr<std::vector<std::string>> ReadConfigFile(const std::string& path,
                                                        std::string_view section,
                                                        const IsFlagFn& is_flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("config file ", path, ": cannot be read"));
  std::ostringstream text;
  text << in.rdbuf();
  return ParseConfigText(text.str(), path, section, is_flag);
}

absl::StatusOr<std::vector<std::string>> ArgsWithConfig(int argc, char** argv,
                                                        std::string_view section,
                                                        const IsFlagFn& is_flag) {
  std::vector<std::string> args(argv, argv + argc);
  std::string path;
  bool found = false;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") break;
    if (a == "--config" || a == "-config") {
      if (i + 1 >= args.size()) return absl::InvalidArgumentError("--config needs a file");
      path = args[i + 1];
      found = true;
    } else if (a.rfind("--config=", 0) == 0 || a.rfind("-config=", 0) == 0) {
      path = a.substr(a.find('=') + 1);
      found = true;
    }
  }
  if (!found) return args;
  if (path.empty()) return absl::InvalidArgumentError("--config needs a file");
  absl::StatusOr<std::vector<std::string>> flags = ReadConfigFile(path, section, is_flag);
  if (!flags.ok()) return flags.status();
  args.insert(args.begin() + 1, flags->begin(), flags->end());
  return args;
}

ConfigArgs::ConfigArgs(int argc, char** argv, std::string_view section, const IsFlagFn& is_flag,
                       const char* program) {
  absl::StatusOr<std::vector<std::string>> args = ArgsWithConfig(argc, argv, section, is_flag);
  if (!args.ok()) {
    std::fprintf(stderr, "%s: %s\n", program, std::string(args.status().message()).c_str());
    std::exit(2);
  }
  args_ = std::move(*args);
  for (std::string& a : args_) ptrs_.push_back(a.data());
  ptrs_.push_back(nullptr);
}

}  // namespace paged
