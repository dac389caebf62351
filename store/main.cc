// paged-store: loads a model into a shared-memory segment and serves it.
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "common/cli.h"
#include "common/config_file.h"
#include "common/log.h"
#include "common/sd_notify.h"
#include "common/segment.h"
#include "common/signals.h"
#include "common/size_flag.h"
#include "store/store_service.h"

ABSL_FLAG(std::string, model, "", "HF checkpoint directory or .gguf file");
ABSL_FLAG(std::string, segment, "paged", "shared memory segment name");
ABSL_FLAG(std::string, weight_format, "native", "native | f32 | f16 | bf16 | int8 | int4");
ABSL_FLAG(double, kv_gib, 1.0, "KV pool size in GiB");
ABSL_FLAG(int, block_tokens, 16, "tokens per KV block");
ABSL_FLAG(std::string, lm_head_format, "auto",
          "an untied lm_head's store type: auto | f16 | bf16 | int8 | int4");
ABSL_FLAG(bool, remove_on_exit, false, "remove the segment when the store exits");
ABSL_FLAG(std::string, group, "",
          "group allowed to read the segment (mode 0640); default: owner only (0600)");
ABSL_FLAG(int, threads, 0, "conversion threads (0: all cores)");
ABSL_FLAG(bool, quiet, false, "no progress output while loading");
ABSL_FLAG(std::string, log_level, "info", "debug | info | warning | error");
ABSL_FLAG(std::string, config, "",
          "config file ([global] and [store] keys; the command line wins)");

static bool IsFlag(const std::string& name) { return absl::FindCommandLineFlag(name) != nullptr; }

int main(int argc, char** argv) {
  paged::ConfigArgs args(argc, argv, "store", IsFlag, "paged-store");
  paged::ParseFlags(
      args.argc(), args.argv(),
      "paged-store --model PATH --segment NAME [--weight-format native|f32|f16|bf16|int8|int4]\n"
      "            [--kv-gib G] [--block-tokens T] [--remove-on-exit] [--group NAME] [--config "
      "FILE]");
  paged::BlockTerminationSignals();  // before any thread starts

  if (absl::Status s = paged::ConfigureLog("paged-store", absl::GetFlag(FLAGS_log_level));
      !s.ok()) {
    std::fprintf(stderr, "paged-store: --log-level: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  paged::StoreOptions opts;
  opts.model_path = absl::GetFlag(FLAGS_model);
  opts.segment = absl::GetFlag(FLAGS_segment);
  opts.layout.weight_format = absl::GetFlag(FLAGS_weight_format);
  opts.layout.kv_gib = absl::GetFlag(FLAGS_kv_gib);
  opts.layout.block_tokens = absl::GetFlag(FLAGS_block_tokens);
  opts.layout.lm_head_format = absl::GetFlag(FLAGS_lm_head_format);
  opts.remove_on_exit = absl::GetFlag(FLAGS_remove_on_exit);
  opts.group = absl::GetFlag(FLAGS_group);
  opts.threads = absl::GetFlag(FLAGS_threads);
  opts.quiet = absl::GetFlag(FLAGS_quiet);
  if (opts.model_path.empty()) {
    std::fprintf(stderr,
                 "paged-store: --model is required (an HF checkpoint directory or a .gguf file)\n");
    return 2;
  }

  paged::SdWatchdog watchdog;  // WATCHDOG=1 while loading and serving, under systemd
  paged::SdNotifyOrLog("STATUS=loading " + opts.model_path + " into segment " + opts.segment);
  auto store = paged::Store::Start(opts);
  if (!store.ok() && store.status().code() == absl::StatusCode::kCancelled) {
    // SIGTERM / SIGINT while loading: the segment stays LOADING (rebuilt by
    // the next start) or is removed with --remove-on-exit.
    std::fprintf(stderr, "paged-store: interrupted while loading, exiting\n");
    if (opts.remove_on_exit) paged::RemoveSegment(opts.segment);
    return 0;
  }
  if (!store.ok()) {
    std::fprintf(stderr, "paged-store: %s\n", std::string(store.status().message()).c_str());
    return 1;
  }
  const paged::StoreReady& r = (*store)->ready();
  std::printf("paged-store: segment %s ready (%s, %s of weights, %s, %.2f s)\n",
              opts.segment.c_str(), paged::FormatBytes(r.total_bytes).c_str(),
              paged::FormatBytes(r.weight_bytes).c_str(), r.reattached ? "re-attached" : "built",
              r.seconds);
  std::fflush(stdout);
  paged::SdNotifyOrLog("READY=1\nSTATUS=segment " + opts.segment + " ready");

  const int sig = paged::WaitForTerminationSignal();
  paged::SdNotifyOrLog("STOPPING=1");
  std::fprintf(stderr, "paged-store: signal %d, exiting%s\n", sig,
               opts.remove_on_exit ? " and removing the segment" : " (segment kept)");
  store->reset();
  return 0;
}
