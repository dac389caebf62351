#include "client/pagectl/flags.h"

#include <cstdio>
#include <cstdlib>

#include "absl/flags/flag.h"
#include "common/token.h"

ABSL_FLAG(std::string, segment, "", "shared memory segment name");
ABSL_FLAG(std::string, model, "", "HF checkpoint directory or .gguf file");
ABSL_FLAG(std::string, weight_format, "native", "inspect --model: the format to plan for");
ABSL_FLAG(bool, json, false, "machine-readable output");
ABSL_FLAG(std::string, preset, "",
          "make-model: tiny, tiny-qwen2, tiny-llama3, tiny-qwen3-moe, tiny-gpt-oss, llama-7b, "
          "llama-13b, llama-70b, llama3-8b, "
          "qwen2-7b, qwen2-0.5b, mistral-7b, mixtral-8x7b, qwen3-30b-a3b, gpt-oss-20b, "
          "gpt-oss-120b");
ABSL_FLAG(std::string, out, "", "make-model: output directory; dump-tensor: output file");
ABSL_FLAG(std::string, tensor, "",
          "dump-tensor: tensor name (canonical, e.g. wq; or a .gguf file's own, e.g. "
          "blk.0.attn_q.weight)");
ABSL_FLAG(int, layer, -1, "dump-tensor: the layer of a layer tensor");
ABSL_FLAG(std::string, rows, "", "dump-tensor: rows A:B (default: all)");
ABSL_FLAG(int, layers, 0, "make-model: number of layers (0: the preset's)");
ABSL_FLAG(uint64_t, seed, 1, "make-model: random seed; generate: sampling seed");
ABSL_FLAG(std::string, dtype, "f16", "make-model: f16 or bf16");
ABSL_FLAG(double, router_skew, 0,
          "make-model: uneven routing of a mixture of experts (router rows scaled by rank^-S; 0 "
          "uniform)");
ABSL_FLAG(std::string, gpu_budget, "4GiB", "plan: device memory budget");
ABSL_FLAG(int, slots, 2, "plan: layer slots");
ABSL_FLAG(std::string, resident, "auto", "plan: resident layers (auto | none | all | N)");
ABSL_FLAG(double, link_gbs, 55.0, "plan: host-to-device link bandwidth, GB/s");
ABSL_FLAG(std::string, host_compute, "auto",
          "plan: the hybrid step's host share of each paged matrix: auto | planned | off | 0..1");
ABSL_FLAG(double, host_gbs, 0,
          "plan: the host executor's GB/s at one token row (0: measured here on --segment)");
ABSL_FLAG(double, memory_gbs, 0,
          "plan: GB/s the host's memory gives the link and the host executor together "
          "(scripts/device/dram_share.sh; 0: unknown, their bandwidths add)");
ABSL_FLAG(std::string, server, "unix:///tmp/paged.sock",
          "the paged server: unix:///path.sock or host:port");
ABSL_FLAG(std::string, token, "",
          "bearer token for the server (visible in ps: prefer --token-file)");
ABSL_FLAG(std::string, token_file, "",
          "file holding the server's bearer token (else $PAGED_TOKEN, else the systemd credential "
          "paged-token)");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA of the server's certificate: connect over TLS");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate, when the server asks for one");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert");
ABSL_FLAG(std::string, tls_server_name, "",
          "name the server's certificate carries, when not the --server host");
ABSL_FLAG(absl::Duration, timeout, absl::ZeroDuration(),
          "deadline of the call (e.g. 30s); 0: 10s for admin calls, none for generate");
ABSL_FLAG(std::string, prompt, "", "generate: prompt text (- reads stdin)");
ABSL_FLAG(std::string, prompt_tokens, "", "generate: prompt token ids, e.g. 1,2,3");
ABSL_FLAG(int, n, 128, "generate: tokens to generate");
ABSL_FLAG(float, temperature, 0.f, "generate: sampling temperature (0: greedy)");
ABSL_FLAG(int, top_k, 0, "generate: top-k (0: off)");
ABSL_FLAG(float, top_p, 1.f, "generate: top-p in (0, 1] (1: off)");
ABSL_FLAG(bool, ignore_eos, false, "generate: keep going past end-of-sequence");
ABSL_FLAG(int, max_tokens, 0, "generate, chat: tokens to generate (the same as -n; wins when set)");
ABSL_FLAG(std::string, system, "", "chat: the system message");
ABSL_FLAG(bool, wait_ready, false,
          "status: first wait until the service can generate (with --segment: show the store "
          "loading it), at most --timeout");

namespace paged::pagectl {

const char kUsage[] =
    "pagectl COMMAND [flags]\n"
    "  make-model --preset NAME --out DIR [--layers N] [--seed S] [--dtype f16|bf16]\n"
    "             [--router-skew S]\n"
    "  inspect (--segment NAME | --model PATH [--weight-format F]) [--json]\n"
    "  verify --segment NAME [--model PATH]\n"
    "  dump-tensor (--model PATH | --segment NAME) --tensor NAME [--layer L] [--rows A:B] --out "
    "FILE.f32\n"
    "                       a tensor decoded to little-endian f32 rows. NAME: canonical (wq, "
    "w_down, tok_embd, ...;\n"
    "                       layer tensors with --layer) or a .gguf file's own "
    "(blk.0.attn_q.weight). Rows of --model\n"
    "                       are in the file's order, of --segment in the segment's (GGUF "
    "wq/wk RoPE-permuted)\n"
    "  plan (--segment NAME | --model PATH [--weight-format F]) --gpu-budget BYTES [--slots S] "
    "[--resident R] [--link-gbs G] [--host-compute auto|off|S] [--host-gbs G] [--memory-gbs G] "
    "[--json]\n"
    "commands that talk to a server (--server ADDR, default unix:///tmp/paged.sock; --token-file F "
    "| $PAGED_TOKEN; --tls-ca F; "
    "--timeout D):\n"
    "  generate (--prompt TEXT | --prompt-tokens 1,2,3) [-n N] [--temperature T] [--top-k K] "
    "[--top-p P]\n"
    "           [--seed S] [--ignore-eos] [--json]\n"
    "  chat [--system TEXT] [-n N] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--json]\n"
    "                       one user message per stdin line; /reset, /exit\n"
    "  status [--json] [--wait-ready [--segment NAME]]   the service and its workers\n"
    "  workers [--json]     workers with their memory plans and counters\n"
    "  sequences [--json]   queued and running sequences\n"
    "  cancel ID            stop a sequence\n"
    "  drain WORKER         a worker finishes its sequences and takes no new ones\n"
    "  models [--json]      the models served";

Flags FlagsFromCommandLine() {
  Flags f;
  f.segment = absl::GetFlag(FLAGS_segment);
  f.model = absl::GetFlag(FLAGS_model);
  f.weight_format = absl::GetFlag(FLAGS_weight_format);
  f.json = absl::GetFlag(FLAGS_json);
  f.preset = absl::GetFlag(FLAGS_preset);
  f.out = absl::GetFlag(FLAGS_out);
  f.tensor = absl::GetFlag(FLAGS_tensor);
  f.layer = absl::GetFlag(FLAGS_layer);
  f.rows = absl::GetFlag(FLAGS_rows);
  f.layers = absl::GetFlag(FLAGS_layers);
  f.seed = absl::GetFlag(FLAGS_seed);
  f.dtype = absl::GetFlag(FLAGS_dtype);
  f.router_skew = absl::GetFlag(FLAGS_router_skew);
  f.gpu_budget = absl::GetFlag(FLAGS_gpu_budget);
  f.host_compute = absl::GetFlag(FLAGS_host_compute);
  f.host_gbs = absl::GetFlag(FLAGS_host_gbs);
  f.memory_gbs = absl::GetFlag(FLAGS_memory_gbs);
  f.slots = absl::GetFlag(FLAGS_slots);
  f.resident = absl::GetFlag(FLAGS_resident);
  f.link_gbs = absl::GetFlag(FLAGS_link_gbs);
  f.server = absl::GetFlag(FLAGS_server);
  auto token = ResolveToken(absl::GetFlag(FLAGS_token), absl::GetFlag(FLAGS_token_file));
  if (!token.ok()) {
    std::fprintf(stderr, "pagectl: %s\n", std::string(token.status().message()).c_str());
    std::exit(2);
  }
  f.token = *token;
  f.tls.ca = absl::GetFlag(FLAGS_tls_ca);
  f.tls.cert = absl::GetFlag(FLAGS_tls_cert);
  f.tls.key = absl::GetFlag(FLAGS_tls_key);
  f.tls.server_name = absl::GetFlag(FLAGS_tls_server_name);
  f.timeout = absl::GetFlag(FLAGS_timeout);
  f.prompt = absl::GetFlag(FLAGS_prompt);
  f.prompt_tokens = absl::GetFlag(FLAGS_prompt_tokens);
  f.max_tokens = absl::GetFlag(FLAGS_n);
  f.temperature = absl::GetFlag(FLAGS_temperature);
  f.top_k = absl::GetFlag(FLAGS_top_k);
  f.top_p = absl::GetFlag(FLAGS_top_p);
  f.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  if (absl::GetFlag(FLAGS_max_tokens) != 0) f.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  f.system = absl::GetFlag(FLAGS_system);
  f.wait_ready = absl::GetFlag(FLAGS_wait_ready);
  return f;
}

}  // namespace paged::pagectl
