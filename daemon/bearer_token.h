// The bearer token check shared by the gRPC services and the HTTP API.
#pragma once

#include <string_view>

namespace paged {

// Whether `authorization` (the header's value) is exactly "Bearer TOKEN",
// compared in time independent of the token's content.
bool BearerTokenMatches(std::string_view authorization, std::string_view token);

}  // namespace paged
