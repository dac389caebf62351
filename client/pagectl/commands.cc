#include "client/pagectl/commands.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "absl/status/status.h"
#include "client/pagectl/inspect.h"
#include "client/pagectl/make_model.h"
#include "client/pagectl/verify.h"
#include "common/size_flag.h"

namespace paged::pagectl {
namespace {

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "pagectl: %s\n", std::string(s.message()).c_str());
  return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

}  // namespace

int MakeModelCommand(const Flags& f) {
  if (f.preset.empty() || f.out.empty()) {
    std::fprintf(stderr, "pagectl make-model: --preset and --out are required\n");
    return 2;
  }
  MakeModelOptions opts;
  opts.preset = f.preset;
  opts.out_dir = f.out;
  opts.layers = f.layers;
  opts.seed = f.seed;
  opts.dtype = f.dtype;
  const bool tty = ::isatty(STDERR_FILENO);
  const auto start = std::chrono::steady_clock::now();
  auto last = start;
  opts.progress = [&](uint64_t done, uint64_t total) {
    const auto now = std::chrono::steady_clock::now();
    if (done < total && now - last < std::chrono::milliseconds(500)) return;
    last = now;
    const double s = std::chrono::duration<double>(now - start).count();
    std::fprintf(stderr, "%smake-model: %s / %s (%.0f MB/s)%s", tty ? "\r" : "", FormatBytes(done).c_str(),
                 FormatBytes(total).c_str(), s > 0 ? double(done) / 1e6 / s : 0.0,
                 tty && done < total ? "" : "\n");
  };
  if (absl::Status s = MakeModel(opts); !s.ok()) return Fail(s);
  std::printf("wrote %s (%s)\n", f.out.c_str(), f.preset.c_str());
  return 0;
}

int InspectCommand(const Flags& f) {
  if (f.segment.empty() == f.model.empty()) {
    std::fprintf(stderr, "pagectl inspect: give exactly one of --segment NAME or --model PATH\n");
    return 2;
  }
  auto d = f.segment.empty() ? InspectModel(f.model, f.weight_format) : InspectSegment(f.segment);
  if (!d.ok()) return Fail(d.status());
  if (f.json) {
    std::printf("%s\n", d->dump(2).c_str());
  } else {
    std::printf("%s", FormatSegmentTable(*d).c_str());
  }
  return 0;
}

int VerifyCommand(const Flags& f) {
  if (f.segment.empty()) {
    std::fprintf(stderr, "pagectl verify: --segment is required\n");
    return 2;
  }
  auto r = VerifySegment(f.segment, f.model);
  if (!r.ok()) return Fail(r.status());
  std::printf("verified %d tensors (%s): all match the model file\n", r->tensors_checked,
              FormatBytes(r->bytes_checked).c_str());
  return 0;
}

}  // namespace paged::pagectl
