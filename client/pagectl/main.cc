// pagectl: the admin CLI of paged.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "common/cli.h"
#include "client/pagectl/commands.h"

ABSL_FLAG(std::string, segment, "", "shared memory segment name");
ABSL_FLAG(std::string, model, "", "HF checkpoint directory or .gguf file");
ABSL_FLAG(std::string, weight_format, "native", "inspect --model: the format to plan for");
ABSL_FLAG(bool, json, false, "machine-readable output");
ABSL_FLAG(std::string, preset, "", "make-model: tiny, tiny-qwen2, tiny-llama3, llama-7b, llama-13b, llama-70b, llama3-8b, qwen2-7b, qwen2-0.5b, mistral-7b");
ABSL_FLAG(std::string, out, "", "make-model: output directory");
ABSL_FLAG(int, layers, 0, "make-model: number of layers (0: the preset's)");
ABSL_FLAG(uint64_t, seed, 1, "make-model: random seed");
ABSL_FLAG(std::string, dtype, "f16", "make-model: f16 or bf16");
ABSL_FLAG(std::string, gpu_budget, "4GiB", "plan: device memory budget");
ABSL_FLAG(int, slots, 2, "plan: layer slots");
ABSL_FLAG(std::string, resident, "auto", "plan: resident layers (auto | none | all | N)");
ABSL_FLAG(double, link_gbs, 55.0, "plan: host-to-device link bandwidth, GB/s");

constexpr char kUsage[] =
    "pagectl COMMAND [flags]\n"
    "  make-model --preset NAME --out DIR [--layers N] [--seed S] [--dtype f16|bf16]\n"
    "  inspect (--segment NAME | --model PATH [--weight-format F]) [--json]\n"
    "  verify --segment NAME [--model PATH]\n"
    "  plan (--segment NAME | --model PATH [--weight-format F]) --gpu-budget BYTES [--slots S] [--resident R] [--json]";

int main(int argc, char** argv) {
  const std::vector<std::string> args = paged::ParseFlags(argc, argv, kUsage);
  if (args.size() != 2) {
    std::fprintf(stderr, "%s\n", kUsage);
    return 2;
  }
  paged::pagectl::Flags f;
  f.segment = absl::GetFlag(FLAGS_segment);
  f.model = absl::GetFlag(FLAGS_model);
  f.weight_format = absl::GetFlag(FLAGS_weight_format);
  f.json = absl::GetFlag(FLAGS_json);
  f.preset = absl::GetFlag(FLAGS_preset);
  f.out = absl::GetFlag(FLAGS_out);
  f.layers = absl::GetFlag(FLAGS_layers);
  f.seed = absl::GetFlag(FLAGS_seed);
  f.dtype = absl::GetFlag(FLAGS_dtype);
  f.gpu_budget = absl::GetFlag(FLAGS_gpu_budget);
  f.slots = absl::GetFlag(FLAGS_slots);
  f.resident = absl::GetFlag(FLAGS_resident);
  f.link_gbs = absl::GetFlag(FLAGS_link_gbs);

  const std::string cmd = args[1];
  if (cmd == "make-model") return paged::pagectl::MakeModelCommand(f);
  if (cmd == "inspect") return paged::pagectl::InspectCommand(f);
  if (cmd == "verify") return paged::pagectl::VerifyCommand(f);
  if (cmd == "plan") return paged::pagectl::PlanCommand(f);
  std::fprintf(stderr, "pagectl: unknown command '%s'\n%s\n", cmd.c_str(), kUsage);
  return 2;
}
