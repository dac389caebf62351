// Command-line parsing shared by every paged binary: abseil flags, spelled
// with dashes on the command line (--kv-gib) as users expect, while the flag
// definitions use underscores (ABSL_FLAG(..., kv_gib, ...)).
#pragma once

#include <string>
#include <vector>

namespace paged {

// Rewrites "--foo-bar[=v]" to "--foo_bar[=v]" (up to "=" and before a bare
// "--"), then parses with absl::ParseCommandLine, which exits with a clear
// message on an unknown flag or a bad value. Returns the positional
// arguments (argv[0] first).
std::vector<std::string> ParseFlags(int argc, char** argv, const char* usage);

}  // namespace paged
