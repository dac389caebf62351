// Serving throughput and latency through the gRPC service: N concurrent
// clients, each one Generate stream of --gen-len tokens after a prompt of
// --prompt-len random tokens. Prints aggregate tokens/s (end to end, and in
// the steady phase once every client has its first token) and time to first
// token.
//
//   serving_bench --server unix:///tmp/paged.sock --clients 32 --prompt-len 128 --gen-len 64
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "client/sdk/paged_client.h"
#include "common/cli.h"

ABSL_FLAG(std::string, server, "unix:///tmp/paged.sock", "gRPC target of the coordinator");
ABSL_FLAG(std::string, token, "", "bearer token");
ABSL_FLAG(int, clients, 32, "concurrent Generate streams");
ABSL_FLAG(int, prompt_len, 128, "prompt tokens per client (BOS + random ids)");
ABSL_FLAG(int, gen_len, 64, "generated tokens per client");
ABSL_FLAG(int, vocab, 32000, "token ids are drawn from [3, vocab)");
ABSL_FLAG(
    std::string, tokens_out, "",
    "write each client's generated token ids to this file, one line per client (to compare runs)");

namespace {

using Clock = std::chrono::steady_clock;

double Pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(p * double(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  paged::ParseFlags(argc, argv,
                    "serving_bench --server ADDR --clients N --prompt-len P --gen-len G");
  auto client =
      paged::client::Client::Connect(absl::GetFlag(FLAGS_server), absl::GetFlag(FLAGS_token));
  if (!client.ok()) {
    std::fprintf(stderr, "serving_bench: %s\n", std::string(client.status().message()).c_str());
    return 1;
  }
  const int n = absl::GetFlag(FLAGS_clients);
  std::vector<double> ttft(size_t(n), 0), done_s(size_t(n), 0);
  std::vector<int> generated(size_t(n), 0);
  std::vector<std::vector<int32_t>> outputs(static_cast<size_t>(n));
  std::vector<std::string> errors;
  std::mutex mu;
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      std::mt19937 rng{static_cast<uint32_t>(i)};
      std::uniform_int_distribution<int32_t> tok(3, absl::GetFlag(FLAGS_vocab) - 1);
      paged::client::GenerateOptions g;
      g.prompt_tokens.push_back(1);
      for (int k = 1; k < absl::GetFlag(FLAGS_prompt_len); ++k) g.prompt_tokens.push_back(tok(rng));
      g.max_tokens = absl::GetFlag(FLAGS_gen_len);
      g.ignore_eos = true;
      bool first = true;
      auto r = client->Generate(g, [&](const paged::client::TokenChunk& c) {
        if (first && !c.token_ids.empty()) {
          ttft[size_t(i)] = std::chrono::duration<double>(Clock::now() - t0).count();
          first = false;
        }
      });
      done_s[size_t(i)] = std::chrono::duration<double>(Clock::now() - t0).count();
      std::lock_guard<std::mutex> l(mu);
      if (!r.ok()) {
        errors.push_back(std::string(r.status().message()));
      } else {
        generated[size_t(i)] = int(r->token_ids.size());
        outputs[size_t(i)] = r->token_ids;
      }
    });
  }
  for (auto& t : threads) t.join();
  const double total_s = *std::max_element(done_s.begin(), done_s.end());
  const double all_first = *std::max_element(ttft.begin(), ttft.end());
  long tokens = 0;
  for (int g : generated) tokens += g;
  // Steady phase: from the moment every client has its first token to the
  // end, the tokens generated after each client's first.
  const double steady = total_s - all_first;
  const double steady_tokens = double(tokens) - double(n);
  std::printf("%8s %8s %8s %10s %12s %14s %10s %10s %10s\n", "clients", "prompt", "gen", "total s",
              "tokens/s", "steady tok/s", "ttft p50", "ttft p90", "ttft max");
  std::printf("%8d %8d %8d %10.2f %12.1f %14.1f %9.3fs %9.3fs %9.3fs\n", n,
              absl::GetFlag(FLAGS_prompt_len), absl::GetFlag(FLAGS_gen_len), total_s,
              double(tokens) / total_s, steady > 0 ? steady_tokens / steady : 0.0, Pct(ttft, 0.5),
              Pct(ttft, 0.9), all_first);
  for (const auto& e : errors) std::fprintf(stderr, "serving_bench: error: %s\n", e.c_str());
  if (const std::string path = absl::GetFlag(FLAGS_tokens_out); !path.empty()) {
    std::FILE* f = std::fopen(path.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "serving_bench: cannot write %s\n", path.c_str());
      return 1;
    }
    for (const auto& ids : outputs) {
      for (size_t k = 0; k < ids.size(); ++k) std::fprintf(f, k == 0 ? "%d" : " %d", ids[k]);
      std::fprintf(f, "\n");
    }
    std::fclose(f);
  }
  return errors.empty() ? 0 : 1;
}
