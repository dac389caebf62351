// The coordinator's log: one line per event on stderr, with its level and
// component ("paged: warning coordinator: worker w1 gone; 3 sequences
// re-queued"). Nothing is logged per step or per token above debug level;
// debug lines (one per HTTP request, for example) are off unless
// --log-level=debug. Under systemd the lines go to the journal.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"

namespace paged {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// "debug", "info", "warning" or "error"; INVALID_ARGUMENT otherwise.
absl::StatusOr<LogLevel> ParseLogLevel(std::string_view name);
// Lines below `level` are dropped (default: info).
void SetLogLevel(LogLevel level);
// Whether a line at `level` would be written (check before formatting).
bool LogEnabled(LogLevel level);

// Writes "paged: LEVEL COMPONENT: MESSAGE\n" as one write.
void Log(LogLevel level, const char* component, const char* format, ...)
    __attribute__((format(printf, 3, 4)));

}  // namespace paged
