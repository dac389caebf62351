// The configuration file shared by the paged binaries (/etc/paged/paged.conf
// under systemd; systemd/paged.conf documents every key):
//
//   # a comment (whole lines only: '#' inside a value is kept)
//   [global]              # keys every binary that has the flag reads
//   segment = paged
//   [store]               # paged-store
//   kv-gib = 2
//   [worker]              # paged-worker
//   [coordinator]         # paged
//
// Each `key = value` becomes the flag --key=value ('_' and '-' both accepted
// in keys; a value in double quotes may be empty or keep outer spaces).
// [global] holds only the keys in kGlobalConfigKeys, passed to the binaries
// that define them; a section's keys are applied after [global]'s, and the
// command line after both, so the command line wins.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace paged {

// Keys allowed in [global].
inline constexpr std::string_view kGlobalConfigKeys[] = {"segment", "token", "token-file",
                                                         "log-level"};

// Whether the binary defines the flag named `name` (absl's spelling, with
// underscores: "kv_gib").
using IsFlagFn = std::function<bool(const std::string& name)>;

// Parses `text` (read from `file`, named in errors) and returns the flags of
// [global] and of `section` ("store", "worker" or "coordinator"), in that
// order, as "--key=value" arguments. INVALID_ARGUMENT naming file:line for a
// malformed line, an unknown section, a key repeated in one section, or a key
// `is_flag` does not know (for `section` and for [global] keys this binary
// would receive). Keys of the other sections are checked for form only.
absl::StatusOr<std::vector<std::string>> ParseConfigText(std::string_view text,
                                                         const std::string& file,
                                                         std::string_view section,
                                                         const IsFlagFn& is_flag);

// Reads `path` and parses it as above; NOT_FOUND when it cannot be read.
absl::StatusOr<std::vector<std::string>> ReadConfigFile(const std::string& path,
                                                        std::string_view section,
                                                        const IsFlagFn& is_flag);

// For main(): when argv holds --config PATH or --config=PATH (before any bare
// "--"), returns argv with the file's flags inserted after argv[0], so the
// command line wins; argv unchanged otherwise. --config stays in argv (define
// the flag so --help lists it).
absl::StatusOr<std::vector<std::string>> ArgsWithConfig(int argc, char** argv,
                                                        std::string_view section,
                                                        const IsFlagFn& is_flag);

// For main(): ArgsWithConfig as an argc / argv pair for ParseFlags; on an
// error prints "PROGRAM: message" and exits with status 2.
class ConfigArgs {
 public:
  ConfigArgs(int argc, char** argv, std::string_view section, const IsFlagFn& is_flag,
             const char* program);
  ConfigArgs(const ConfigArgs&) = delete;
  ConfigArgs& operator=(const ConfigArgs&) = delete;
  int argc() const { return int(args_.size()); }
  char** argv() { return ptrs_.data(); }

 private:
  std::vector<std::string> args_;
  std::vector<char*> ptrs_;  // into args_, nullptr-terminated
};

}  // namespace paged
