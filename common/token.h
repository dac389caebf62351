// Where the binaries take the bearer token from, so that it never has to be
// on a command line (`ps` shows argv to every user of the machine):
//   1. --token T (or `token` in the config file, which is not argv),
//   2. --token-file PATH (or `token-file` in the config file),
//   3. the environment variable PAGED_TOKEN (paged-up passes it so to its
//      children),
//   4. a systemd credential: $CREDENTIALS_DIRECTORY/paged-token
//      (LoadCredential=paged-token:/etc/paged/token in the unit).
// The first that is set wins. A file's content is trimmed of surrounding
// whitespace (a trailing newline); an empty or unreadable file is an error.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace paged {

inline constexpr char kTokenEnv[] = "PAGED_TOKEN";
inline constexpr char kTokenCredential[] = "paged-token";

// The token ("" when none is configured), or INVALID_ARGUMENT naming the
// file that cannot be read or is empty.
absl::StatusOr<std::string> ResolveToken(const std::string& token_flag,
                                         const std::string& token_file);

// A secret file's content, trimmed; INVALID_ARGUMENT when unreadable or empty.
absl::StatusOr<std::string> ReadSecretFile(const std::string& path);

}  // namespace paged
