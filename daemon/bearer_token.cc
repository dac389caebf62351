#include "daemon/bearer_token.h"

#include <cstdint>
#include <string>

namespace paged {

bool BearerTokenMatches(std::string_view authorization, std::string_view token) {
  const std::string want = "Bearer " + std::string(token);
  unsigned diff = authorization.size() == want.size() ? 0u : 1u;
  for (size_t i = 0; i < want.size(); ++i)
    diff |= unsigned(uint8_t(want[i]) ^ uint8_t(i < authorization.size() ? authorization[i] : 0));
  return diff == 0;
}

}  // namespace paged
