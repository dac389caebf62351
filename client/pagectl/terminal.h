// pagectl's terminal helpers: colours only for a person at a terminal, and
// progress bars for long waits (a line redrawn in place on a terminal, plain
// lines now and then otherwise). The rendering is pure and tested; only
// TerminalColumns and the *Color() helpers look at the process.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>

namespace paged::pagectl {

// SGR codes pagectl uses.
inline constexpr const char* kBold = "1";
inline constexpr const char* kDim = "2";
inline constexpr const char* kRed = "31";
inline constexpr const char* kGreen = "32";
inline constexpr const char* kYellow = "33";

// Whether to colour a stream: it is a terminal, NO_COLOR is not set (set to
// anything, even "", turns colours off: no-color.org) and TERM is not "dumb".
// `no_color` and `term` are the variables' values, null when unset.
bool ColorWanted(bool is_terminal, const char* no_color, const char* term);
// ColorWanted for this process's stdout / stderr.
bool StdoutColor();
bool StderrColor();

// `text` in SGR `code` when `color` (and code is not null), else as it is.
std::string Paint(std::string_view text, const char* code, bool color);

// The colour of a finish reason ("stop", "eos": green; "length",
// "cancelled": yellow; "error": red) and of a state (READY, ATTACHED,
// RUNNING green; LOADING, DRAINING, DRAINED, QUEUED yellow; GONE, FAILED red).
const char* FinishReasonColor(std::string_view reason);
const char* StateColor(std::string_view state);

// Columns of the terminal on `fd`; `fallback` when it is not a terminal.
int TerminalColumns(int fd, int fallback = 80);

// "[#######>            ]": `width` columns (brackets included, at least 3)
// filled to `fraction`, clamped to [0, 1]; full is all '#', empty all ' '.
std::string RenderBar(double fraction, int width);

// One progress line no wider than `columns` (at least the label and the
// numbers): "loading [#####>      ]  45%  1.20 GiB / 2.67 GiB  850.0 MB/s".
// The bar's width depends on `columns` and the label only (the numbers get a
// fixed room), so that it does not jump as they change; at most 40 columns,
// none when fewer than 10 are left.
// `total` 0: unknown, "loading  1.20 GiB" with no bar. `bytes_per_s` <= 0:
// no rate yet.
std::string RenderProgressLine(std::string_view label, uint64_t done, uint64_t total,
                               double bytes_per_s, int columns);

// Shows the progress of one wait. On a terminal: one line redrawn in place
// ("\r" + line + clear to the end), at most every 0.1 s. Otherwise: a plain
// line when the note changes, and progress at most every `plain_every_s`.
// Times are passed in (seconds on any monotonic clock) so that tests drive it.
class ProgressDisplay {
 public:
  using Writer = std::function<void(const std::string&)>;
  ProgressDisplay(Writer write, bool terminal, int columns, double plain_every_s = 5.0);
  ~ProgressDisplay();
  ProgressDisplay(const ProgressDisplay&) = delete;
  ProgressDisplay& operator=(const ProgressDisplay&) = delete;

  // Bytes done of total (0: unknown); the rate is measured over the updates
  // of the last few seconds.
  void Update(std::string_view label, uint64_t done, uint64_t total, double now_s);
  // A wait with no bytes to count ("waiting for paged at unix:///...").
  void Note(std::string_view text, double now_s);
  // Ends the display: a terminal's line is cleared (then `final_line`, when
  // not empty, printed with a newline); a plain stream gets `final_line`.
  void Finish(std::string_view final_line);

 private:
  void Show(const std::string& line, bool changed, double now_s);

  Writer write_;
  bool terminal_;
  int columns_;
  double plain_every_s_;
  bool drawn_ = false;  // a terminal line is on screen
  double last_shown_s_ = -1e300;
  std::string last_line_;
  std::string last_label_;
  // Rate: (time, bytes done) of the current label's recent updates.
  std::deque<std::pair<double, uint64_t>> samples_;
};

}  // namespace paged::pagectl
