#include "common/cli.h"

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace paged {
namespace {

// --help lists the flags the program itself defines (they live in its
// main.cc or flags.cc), not abseil's own; --helpfull lists everything.
bool OwnFlagsFile(absl::string_view path) { return !absl::StrContains(path, "absl/"); }

// Flag files are shown relative to the source tree.
std::string SourceRelative(absl::string_view path) {
  constexpr absl::string_view kThisFile = __FILE__;  // <root>/common/cli.cc
  const absl::string_view root =
      kThisFile.substr(0, kThisFile.size() - sizeof("common/cli.cc") + 1);
  if (absl::StartsWith(path, root)) path.remove_prefix(root.size());
  return std::string(path);
}

}  // namespace

std::vector<std::string> ParseFlags(int argc, char** argv, const char* usage) {
  absl::FlagsUsageConfig config;
  config.contains_helpshort_flags = OwnFlagsFile;
  config.contains_help_flags = OwnFlagsFile;
  config.normalize_filename = SourceRelative;
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(absl::StrCat(
      usage, "\n\nFlags are written --foo-bar or --foo_bar; --helpfull lists every flag."));
  std::vector<std::string> args(argv, argv + argc);
  bool flags_done = false;
  for (size_t i = 1; i < args.size(); ++i) {
    std::string& a = args[i];
    if (a == "--") flags_done = true;
    if (flags_done || a.size() < 3 || a[0] != '-') continue;
    const size_t start = a[1] == '-' ? 2 : 1;
    const size_t end = std::min(a.find('='), a.size());
    for (size_t k = start; k < end; ++k) {
      if (a[k] == '-') a[k] = '_';
    }
  }
  std::vector<char*> ptrs;
  for (auto& a : args) ptrs.push_back(a.data());
  std::vector<char*> rest = absl::ParseCommandLine(int(ptrs.size()), ptrs.data());
  return std::vector<std::string>(rest.begin(), rest.end());
}

}  // namespace paged
