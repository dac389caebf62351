#include "common/log.h"

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"

namespace paged {
namespace {

std::atomic<int> g_level{int(LogLevel::kInfo)};
std::atomic<const char*> g_program{"paged"};

const char* LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

}  // namespace

absl::StatusOr<LogLevel> ParseLogLevel(std::string_view name) {
  for (LogLevel l : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarning, LogLevel::kError}) {
    if (name == LevelName(l)) return l;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("log level '", std::string(name), "': want debug, info, warning or error"));
}

void SetLogLevel(LogLevel level) { g_level.store(int(level), std::memory_order_relaxed); }

void SetLogProgram(const char* name) { g_program.store(name, std::memory_order_relaxed); }

absl::Status ConfigureLog(const char* program, std::string_view level) {
  absl::StatusOr<LogLevel> l = ParseLogLevel(level);
  if (!l.ok()) return l.status();
  SetLogProgram(program);
  SetLogLevel(*l);
  return absl::OkStatus();
}

bool LogEnabled(LogLevel level) { return int(level) >= g_level.load(std::memory_order_relaxed); }

void Log(LogLevel level, const char* component, const char* format, ...) {
  if (!LogEnabled(level)) return;
  char message[1024];
  va_list args;
  va_start(args, format);
  std::vsnprintf(message, sizeof(message), format, args);
  va_end(args);
  const std::string line = absl::StrCat(g_program.load(std::memory_order_relaxed), ": ",
                                        LevelName(level), " ", component, ": ", message, "\n");
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace paged
