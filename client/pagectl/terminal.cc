#include "client/pagectl/terminal.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/pagectl/service_format.h"
#include "common/size_flag.h"

namespace paged::pagectl {

bool ColorWanted(bool is_terminal, const char* no_color, const char* term) {
  if (!is_terminal || no_color != nullptr) return false;
  return term == nullptr || std::strcmp(term, "dumb") != 0;
}

bool StdoutColor() {
  return ColorWanted(::isatty(STDOUT_FILENO) == 1, std::getenv("NO_COLOR"), std::getenv("TERM"));
}

bool StderrColor() {
  return ColorWanted(::isatty(STDERR_FILENO) == 1, std::getenv("NO_COLOR"), std::getenv("TERM"));
}

std::string Paint(std::string_view text, const char* code, bool color) {
  if (!color || code == nullptr) return std::string(text);
  return absl::StrCat("\033[", code, "m", std::string(text), "\033[0m");
}

const char* FinishReasonColor(std::string_view reason) {
  if (reason == "stop" || reason == "eos") return kGreen;
  if (reason == "length" || reason == "cancelled") return kYellow;
  if (reason == "error") return kRed;
  return nullptr;
}

const char* StateColor(std::string_view state) {
  if (state == "ATTACHED" || state == "READY" || state == "RUNNING") return kGreen;
  if (state == "DRAINING" || state == "DRAINED" || state == "QUEUED" || state == "LOADING")
    return kYellow;
  if (state == "GONE" || state == "FAILED") return kRed;
  if (state == "FINISHED") return kDim;
  return nullptr;
}

int TerminalColumns(int fd, int fallback) {
  struct winsize ws {};
  if (::isatty(fd) == 1 && ::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return fallback;
}

std::string RenderBar(double fraction, int width) {
  width = std::max(width, 3);
  const int inner = width - 2;
  if (!(fraction > 0)) fraction = 0;  // NaN too
  fraction = std::min(fraction, 1.0);
  const int full = int(std::floor(fraction * inner));
  std::string bar = "[";
  bar.append(size_t(full), '#');
  if (full < inner) {
    bar += full > 0 ? '>' : ' ';
    bar.append(size_t(inner - full - 1), ' ');
  }
  bar += ']';
  return bar;
}

std::string RenderProgressLine(std::string_view label, uint64_t done, uint64_t total,
                               double bytes_per_s, int columns) {
  std::string numbers;
  if (total > 0) {
    const double pct = 100.0 * std::min(1.0, double(done) / double(total));
    numbers = absl::StrFormat("%3.0f%%  %s / %s", pct, FormatBytes(done), FormatBytes(total));
  } else {
    numbers = FormatBytes(done);
  }
  if (bytes_per_s > 0) absl::StrAppend(&numbers, "  ", FormatRate(bytes_per_s));
  const std::string head(label);
  if (total == 0) return absl::StrCat(head, "  ", numbers);
  // label + " " + bar + "  " + numbers, the numbers given room for
  // "100%  1023.99 MiB / 1023.99 MiB  999.9 MB/s".
  constexpr int kNumbersRoom = 44;
  const int numbers_room = std::max(int(numbers.size()), kNumbersRoom);
  const int bar_width = std::min(columns - int(head.size()) - 3 - numbers_room, 40);
  if (bar_width < 10) return absl::StrCat(head, "  ", numbers);
  return absl::StrCat(head, " ", RenderBar(double(done) / double(total), bar_width), "  ", numbers);
}

ProgressDisplay::ProgressDisplay(Writer write, bool terminal, int columns, double plain_every_s)
    : write_(std::move(write)),
      terminal_(terminal),
      columns_(std::max(columns, 20)),
      plain_every_s_(plain_every_s) {}

ProgressDisplay::~ProgressDisplay() {
  if (drawn_) Finish("");
}

void ProgressDisplay::Update(std::string_view label, uint64_t done, uint64_t total, double now_s) {
  constexpr double kRateWindowS = 3.0;
  const bool new_label = label != last_label_;
  if (new_label) {
    last_label_ = std::string(label);
    samples_.clear();
  }
  if (!samples_.empty() && done < samples_.back().second) samples_.clear();  // started over
  samples_.emplace_back(now_s, done);
  while (samples_.size() > 2 && now_s - samples_[1].first >= kRateWindowS) samples_.pop_front();
  const double dt = now_s - samples_.front().first;
  const double rate = dt >= 0.5 ? double(done - samples_.front().second) / dt : 0.0;
  // A terminal line leaves a column free: writing the last one wraps on
  // some terminals.
  Show(RenderProgressLine(label, done, total, rate, terminal_ ? columns_ - 1 : 1 << 20), new_label,
       now_s);
}

void ProgressDisplay::Note(std::string_view text, double now_s) {
  last_label_.clear();
  samples_.clear();
  std::string line(text);
  if (terminal_ && int(line.size()) > columns_ - 1) line.resize(size_t(columns_ - 1));
  Show(line, line != last_line_, now_s);
}

void ProgressDisplay::Show(const std::string& line, bool changed, double now_s) {
  if (terminal_) {
    if (!changed && now_s - last_shown_s_ < 0.1) return;
    if (line == last_line_ && drawn_) return;
    write_(absl::StrCat("\r", line, "\033[K"));
    drawn_ = true;
  } else {
    if (!changed && now_s - last_shown_s_ < plain_every_s_) return;
    if (line == last_line_) return;
    write_(line + "\n");
  }
  last_line_ = line;
  last_shown_s_ = now_s;
}

void ProgressDisplay::Finish(std::string_view final_line) {
  if (terminal_ && drawn_) write_("\r\033[K");
  drawn_ = false;
  if (!final_line.empty()) write_(absl::StrCat(std::string(final_line), "\n"));
  last_line_.clear();
  last_label_.clear();
  samples_.clear();
}

}  // namespace paged::pagectl
