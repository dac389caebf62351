// The processes' log: one line per event on stderr, with the program, its
// level and component ("paged: warning coordinator: worker w1 gone; 3
// sequences re-queued", "paged-worker: info link: attached to ..."). Nothing
// is logged per step or per token above debug level; debug lines (one per
// HTTP request, for example) are off unless --log-level=debug. Under systemd
// the lines go to the journal. Fatal start-up errors stay one plain line
// ("paged-worker: --gpu-budget=...") on the way out.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"

namespace paged {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// "debug", "info", "warning" or "error"; INVALID_ARGUMENT otherwise.
absl::StatusOr<LogLevel> ParseLogLevel(std::string_view name);
// Lines below `level` are dropped (default: info).
void SetLogLevel(LogLevel level);
// The program name that starts each line (default "paged"; set once in main).
void SetLogProgram(const char* name);
// SetLogProgram(program) and SetLogLevel(ParseLogLevel(level)), for mains;
// INVALID_ARGUMENT for a bad level.
absl::Status ConfigureLog(const char* program, std::string_view level);
// Whether a line at `level` would be written (check before formatting).
bool LogEnabled(LogLevel level);

// Writes "PROGRAM: LEVEL COMPONENT: MESSAGE\n" as one write.
void Log(LogLevel level, const char* component, const char* format, ...)
    __attribute__((format(printf, 3, 4)));

}  // namespace paged
