#include "common/process.h"

#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"

namespace paged {
namespace {

struct Stat {
  char state = '?';
  uint64_t start_time = 0;
};

std::optional<Stat> ReadStat(int pid) {
  if (pid <= 0) return std::nullopt;
  std::ifstream f(absl::StrCat("/proc/", pid, "/stat"));
  std::string line;
  if (!f || !std::getline(f, line)) return std::nullopt;
  // The command name (field 2) may hold spaces and parentheses: fields
  // resume after the last ')'.
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 1));
  Stat s;
  std::string field;
  for (int i = 3; i <= 22; ++i) {
    if (!(rest >> field)) return std::nullopt;
    if (i == 3) s.state = field.empty() ? '?' : field[0];
  }
  s.start_time = std::stoull(field);
  return s;
}

}  // namespace

std::optional<uint64_t> ProcessStartTime(int pid) {
  const std::optional<Stat> s = ReadStat(pid);
  if (!s) return std::nullopt;
  return s->start_time;
}

bool ProcessAlive(int pid, uint64_t start_time) {
  const std::optional<Stat> s = ReadStat(pid);
  return s && s->start_time == start_time && s->state != 'Z' && s->state != 'X' && s->state != 'x';
}

}  // namespace paged
