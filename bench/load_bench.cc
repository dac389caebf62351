// Load speed of paged-store: builds a segment from a checkpoint in each
// weight format and prints MB/s (bytes read from the checkpoint and bytes
// written to the segment, per second of build).
//
//   load_bench --model DIR [--formats native,int8,int4] [--threads N]
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_split.h"
#include "common/cli.h"
#include "common/size_flag.h"
#include "store/store_service.h"

ABSL_FLAG(std::string, model, "", "HF checkpoint directory or .gguf file");
ABSL_FLAG(std::string, formats, "native,int8,int4", "comma-separated weight formats");
ABSL_FLAG(int, threads, 0, "conversion threads (0: all cores)");
ABSL_FLAG(std::string, segment, "paged-load-bench", "scratch segment name (removed after)");

int main(int argc, char** argv) {
  paged::ParseFlags(argc, argv,
                    "load_bench --model PATH [--formats native,int8,int4] [--threads N]");
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) {
    std::fprintf(stderr, "load_bench: --model is required\n");
    return 2;
  }
  std::printf("%-8s %12s %12s %10s %14s %14s\n", "format", "checkpoint", "segment", "seconds",
              "read MB/s", "written MB/s");
  for (const std::string& fmt : std::vector<std::string>(
           absl::StrSplit(absl::GetFlag(FLAGS_formats), ',', absl::SkipEmpty()))) {
    paged::StoreOptions opts;
    opts.model_path = model;
    opts.segment = absl::GetFlag(FLAGS_segment);
    opts.layout.weight_format = fmt;
    opts.layout.kv_gib = 0;
    opts.remove_on_exit = true;
    opts.quiet = true;
    opts.threads = absl::GetFlag(FLAGS_threads);
    // Each format is a fresh build: no re-attach across formats.
    auto store = paged::Store::Start(opts);
    if (!store.ok()) {
      std::fprintf(stderr, "load_bench: %s\n", std::string(store.status().message()).c_str());
      return 1;
    }
    const paged::StoreReady& r = (*store)->ready();
    const double in_bytes = double(r.source_bytes);
    std::printf("%-8s %12s %12s %10.2f %14.0f %14.0f\n", fmt.c_str(),
                paged::FormatBytes(r.source_bytes).c_str(),
                paged::FormatBytes(r.weight_bytes).c_str(), r.seconds, in_bytes / 1e6 / r.seconds,
                double(r.weight_bytes) / 1e6 / r.seconds);
  }
  return 0;
}
