// pagectl's command-line flags (defined in flags.cc, linked into the pagectl
// binary only) and its usage text.
#pragma once

#include "client/pagectl/commands.h"

namespace paged::pagectl {

extern const char kUsage[];

// The parsed flags (call after paged::ParseFlags).
Flags FlagsFromCommandLine();

}  // namespace paged::pagectl
