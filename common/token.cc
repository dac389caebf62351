#include "common/token.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace paged {

absl::StatusOr<std::string> ReadSecretFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f)
    return absl::InvalidArgumentError(
        absl::StrCat("token file ", path, ": cannot read it (", std::strerror(errno), ")"));
  std::stringstream text;
  text << f.rdbuf();
  std::string token(absl::StripAsciiWhitespace(text.str()));
  if (token.empty())
    return absl::InvalidArgumentError(absl::StrCat("token file ", path, " is empty"));
  return token;
}

absl::StatusOr<std::string> ResolveToken(const std::string& token_flag,
                                         const std::string& token_file) {
  if (!token_flag.empty()) return token_flag;
  if (!token_file.empty()) return ReadSecretFile(token_file);
  if (const char* env = std::getenv(kTokenEnv); env != nullptr && env[0] != '\0')
    return std::string(absl::StripAsciiWhitespace(env));
  if (const char* dir = std::getenv("CREDENTIALS_DIRECTORY"); dir != nullptr && dir[0] != '\0') {
    const std::string path = absl::StrCat(dir, "/", kTokenCredential);
    std::ifstream probe(path);
    if (probe) return ReadSecretFile(path);
  }
  return std::string();
}

}  // namespace paged
