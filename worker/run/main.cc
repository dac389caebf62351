// paged-run: loads a model in-process, generates, prints the text.
#include <cstdio>

#include "absl/flags/flag.h"
#include "common/cli.h"
#include "worker/offline/offline_runner.h"

ABSL_FLAG(std::string, model, "", "HF checkpoint directory or .gguf file");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N");
ABSL_FLAG(std::string, weight_format, "native", "native | f32 | f16 | bf16 | int8 | int4");
ABSL_FLAG(std::string, prompt, "", "prompt text (BOS is added)");
ABSL_FLAG(std::string, prompt_tokens, "",
          "prompt as token ids: 1,2,3 (for models without a tokenizer)");
ABSL_FLAG(int, n, 64, "tokens to generate");
ABSL_FLAG(float, temperature, 0.f, "0: greedy");
ABSL_FLAG(int, top_k, 0, "0: off");
ABSL_FLAG(float, top_p, 1.f, "1: off");
ABSL_FLAG(uint64_t, seed, 0, "sampling seed (same seed, same tokens)");
ABSL_FLAG(bool, tokens, false, "print token ids instead of text");
ABSL_FLAG(double, kv_gib, 0, "KV pool size (0: what the request needs)");
ABSL_FLAG(int, threads, 0, "CPU threads (0: all cores)");

int main(int argc, char** argv) {
  paged::ParseFlags(
      argc, argv,
      "paged-run --model PATH [--device cpu|cuda[:N]] [--weight-format F] [--prompt TEXT | "
      "--prompt-tokens 1,2,3] [-n N] [--temperature T] [--top-k K] [--top-p P] [--seed S] "
      "[--tokens]");
  paged::OfflineRunOptions o;
  o.model_path = absl::GetFlag(FLAGS_model);
  o.device = absl::GetFlag(FLAGS_device);
  o.weight_format = absl::GetFlag(FLAGS_weight_format);
  o.prompt = absl::GetFlag(FLAGS_prompt);
  o.max_new_tokens = absl::GetFlag(FLAGS_n);
  o.sampling.temperature = absl::GetFlag(FLAGS_temperature);
  o.sampling.top_k = absl::GetFlag(FLAGS_top_k);
  o.sampling.top_p = absl::GetFlag(FLAGS_top_p);
  o.sampling.seed = absl::GetFlag(FLAGS_seed);
  o.print_tokens = absl::GetFlag(FLAGS_tokens);
  o.kv_gib = absl::GetFlag(FLAGS_kv_gib);
  o.threads = absl::GetFlag(FLAGS_threads);
  absl::Status s =
      o.model_path.empty() ? absl::InvalidArgumentError("--model is required") : absl::OkStatus();
  if (s.ok() && !absl::GetFlag(FLAGS_prompt_tokens).empty()) {
    auto ids = paged::ParseTokenList(absl::GetFlag(FLAGS_prompt_tokens));
    s = ids.status();
    if (ids.ok()) o.prompt_tokens = *ids;
  }
  if (s.ok()) s = paged::RunOffline(o, stdout, stderr);
  if (!s.ok()) {
    std::fprintf(stderr, "paged-run: %s\n", std::string(s.message()).c_str());
    return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
