// A multi-turn chat workload through the gRPC service (issue 16): --users
// conversations start together, each runs --turns requests in sequence. Every
// prompt starts with the same --system-len tokens (a shared system prompt);
// turn k's prompt is that, then for each earlier turn the user's words and the
// reply the user received, then the turn's new words (--user-len random ids
// from the user's own seeded RNG). Token ids only, so any model serves it.
// Prints time to first token per turn, the run's tokens/s, the later turns'
// time to first token (what the prefix cache is for) and the server's prefix
// cache counters, then one machine-readable `summary` line.
//
//   chat_bench --server unix:///tmp/paged.sock --users 64 --system-len 1024 --turns 4
//              --user-len 64 --reply-len 64
//
// Replies: every request sets ignore_eos, so a reply is --reply-len tokens
// (random weights have no natural end). With --omit-max-tokens a request
// carries max_tokens = context - prompt, what an OpenAI request without
// max_tokens means (the server plans for the whole context); the client then
// ends the reply itself after --reply-len tokens: it finds the sequence by its
// request id (ListSequences) and cancels it, as a chat client closing the
// stream would. Tokens that arrive before the cancel lands count in tokens/s
// but are not put into the conversation (the next prompt carries exactly
// --reply-len reply tokens in both modes).
//
// Exit status 1 when any request failed (each error is printed).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <latch>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "client/sdk/paged_client.h"
#include "common/cli.h"

ABSL_FLAG(std::string, server, "unix:///tmp/paged.sock", "gRPC target of the coordinator");
ABSL_FLAG(std::string, token, "", "bearer token");
ABSL_FLAG(int, users, 64, "concurrent conversations (one thread each)");
ABSL_FLAG(int, system_len, 1024, "tokens of the shared system prompt (BOS + random ids)");
ABSL_FLAG(int, turns, 4, "requests per user, in sequence");
ABSL_FLAG(int, user_len, 64, "tokens a user adds per turn");
ABSL_FLAG(int, reply_len, 64, "reply tokens per turn (kept in the conversation)");
ABSL_FLAG(int, vocab, 0,
          "token ids are drawn from [3, vocab) (0: the server's model's vocabulary)");
ABSL_FLAG(int, context, 0,
          "the model's context, for --omit-max-tokens (0: ask the server's ListModels)");
ABSL_FLAG(bool, omit_max_tokens, false,
          "requests carry max_tokens = context - prompt; the client cancels each reply after "
          "--reply-len tokens");
ABSL_FLAG(uint32_t, seed, 1, "seed of the system prompt and of every user's words");
ABSL_FLAG(double, request_timeout, 600, "seconds one request may take (0: no limit)");
ABSL_FLAG(std::string, label, "", "a name for this run, printed in the summary line");

namespace {

using Clock = std::chrono::steady_clock;
namespace pc = paged::client;

struct RequestRecord {
  int user = 0;
  int turn = 0;  // 0-based
  int prompt_tokens = 0;
  double start_s = 0;  // since the run began
  double ttft_s = -1;  // from start; < 0: no token came
  double end_s = 0;
  int tokens = 0;  // generated tokens received (also after a cancel was sent)
  std::string error;
};

// Nearest-rank percentile, p in (0, 1]; 0 for an empty set.
double Pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t rank = size_t(std::ceil(p * double(v.size())));
  return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
}

// Ends a running sequence the SDK knows only by our request id: the stream
// callback does not carry the sequence id, so look it up.
absl::Status CancelByRequestId(const pc::Client& client, const std::string& request_id) {
  absl::StatusOr<std::vector<pc::SequenceInfo>> seqs = client.ListSequences();
  if (!seqs.ok()) return seqs.status();
  for (const pc::SequenceInfo& s : *seqs) {
    if (s.request_id == request_id && s.state != "FINISHED") return client.Cancel(s.sequence_id);
  }
  return absl::NotFoundError(absl::StrCat("no running sequence with request id ", request_id));
}

// The server's KV pool and prefix cache counters (ServerStatus).
std::optional<pc::ServerStatus> ReadCounters(const pc::Client& client) {
  absl::StatusOr<pc::ServerStatus> s = client.Status();
  if (!s.ok()) {
    std::fprintf(stderr, "chat_bench: server status: %s\n",
                 std::string(s.status().message()).c_str());
    return std::nullopt;
  }
  return *std::move(s);
}

std::vector<double> Ms(const std::vector<const RequestRecord*>& rs) {
  std::vector<double> out;
  for (const RequestRecord* r : rs)
    if (r->error.empty() && r->ttft_s >= 0) out.push_back(r->ttft_s * 1e3);
  return out;
}

// What every conversation shares.
struct Workload {
  std::vector<int32_t> system;  // the shared system prompt (BOS first)
  int turns = 0, user_len = 0, reply_len = 0, vocab = 0, context = 0;
  bool omit_max_tokens = false;
  uint32_t seed = 0;
  double request_timeout_s = 0;  // 0: none
  Clock::time_point t0;          // the run's start: every time is seconds since
};

// One user's turns in sequence; a failed request ends the conversation.
std::vector<RequestRecord> RunConversation(const pc::Client& client, const Workload& w, int u) {
  auto now_s = [&] { return std::chrono::duration<double>(Clock::now() - w.t0).count(); };
  std::mt19937 rng{w.seed * 1000003u + uint32_t(u) + 1u};
  std::uniform_int_distribution<int32_t> tok(3, w.vocab - 1);
  std::vector<int32_t> conversation = w.system;
  std::vector<RequestRecord> records;
  for (int t = 0; t < w.turns; ++t) {
    for (int k = 0; k < w.user_len; ++k) conversation.push_back(tok(rng));
    RequestRecord rec;
    rec.user = u;
    rec.turn = t;
    rec.prompt_tokens = int(conversation.size());
    pc::GenerateOptions g;
    g.prompt_tokens = conversation;
    g.max_tokens = w.omit_max_tokens ? w.context - int(conversation.size()) : w.reply_len;
    g.ignore_eos = true;
    g.request_id = absl::StrCat("chat-u", u, "-t", t + 1);
    if (w.request_timeout_s > 0) g.timeout = absl::Seconds(w.request_timeout_s);
    bool cancel_sent = false;
    std::string cancel_error;
    rec.start_s = now_s();
    auto r = client.Generate(g, [&](const pc::TokenChunk& c) {
      if (c.token_ids.empty()) return;
      if (rec.ttft_s < 0) rec.ttft_s = now_s() - rec.start_s;
      rec.tokens += int(c.token_ids.size());
      if (w.omit_max_tokens && !cancel_sent && rec.tokens >= w.reply_len) {
        cancel_sent = true;
        if (absl::Status s = CancelByRequestId(client, g.request_id); !s.ok())
          cancel_error = std::string(s.message());
      }
    });
    rec.end_s = now_s();
    if (!r.ok()) {
      rec.error = std::string(r.status().message());
    } else if (r->finish_reason == pc::FinishReason::kError) {
      rec.error = "the server ended the generation with an error";
    } else if (!cancel_error.empty()) {
      rec.error = "cancel: " + cancel_error;
    } else if (int(r->token_ids.size()) < w.reply_len) {
      rec.error = absl::StrCat("reply of ", r->token_ids.size(), " tokens, want ", w.reply_len,
                               " (finish: ", pc::FinishReasonName(r->finish_reason), ")");
    } else {
      conversation.insert(conversation.end(), r->token_ids.begin(),
                          r->token_ids.begin() + w.reply_len);
    }
    const bool failed = !rec.error.empty();
    records.push_back(std::move(rec));
    if (failed) break;  // the conversation cannot go on
  }
  return records;
}

// Prints the per-turn table, the run's totals, the server's cache counters
// (the difference over the run) and the summary line; returns the errors.
int Report(const std::vector<std::vector<RequestRecord>>& records, const Workload& w,
           const std::optional<pc::ServerStatus>& before,
           const std::optional<pc::ServerStatus>& after, const std::string& label) {
  const int users = int(records.size());
  std::vector<const RequestRecord*> all;
  std::vector<std::vector<const RequestRecord*>> by_turn(static_cast<size_t>(w.turns));
  double first_start = 1e300, last_end = 0;
  long tokens = 0;
  int errors = 0;
  for (const auto& user : records) {
    for (const RequestRecord& r : user) {
      all.push_back(&r);
      by_turn[size_t(r.turn)].push_back(&r);
      first_start = std::min(first_start, r.start_s);
      last_end = std::max(last_end, r.end_s);
      tokens += r.tokens;
      if (!r.error.empty()) ++errors;
    }
  }
  const double wall = last_end > first_start ? last_end - first_start : 0;

  std::printf(
      "chat: %d users, %d turns, system %d, user %d, reply %d tokens, vocab %d, context "
      "%d, max_tokens %s\n",
      users, w.turns, int(w.system.size()), w.user_len, w.reply_len, w.vocab, w.context,
      w.omit_max_tokens ? "omitted (context - prompt; the client cancels)" : "= reply");
  std::printf("%5s %9s %7s %12s %14s %14s %14s %11s\n", "turn", "requests", "errors", "prompt mean",
              "ttft p50 ms", "ttft p99 ms", "e2e p50 ms", "tokens mean");
  for (int t = 0; t < w.turns; ++t) {
    const auto& rs = by_turn[size_t(t)];
    double prompt_sum = 0, tok_sum = 0;
    int errs = 0;
    std::vector<double> e2e;
    for (const RequestRecord* r : rs) {
      prompt_sum += r->prompt_tokens;
      tok_sum += r->tokens;
      if (!r->error.empty()) {
        ++errs;
      } else {
        e2e.push_back((r->end_s - r->start_s) * 1e3);
      }
    }
    const double n = rs.empty() ? 1 : double(rs.size());
    const std::vector<double> ttft = Ms(rs);
    std::printf("%5d %9zu %7d %12.1f %14.1f %14.1f %14.1f %11.1f\n", t + 1, rs.size(), errs,
                prompt_sum / n, Pct(ttft, 0.5), Pct(ttft, 0.99), Pct(e2e, 0.5), tok_sum / n);
  }
  std::vector<const RequestRecord*> later;
  for (int t = 1; t < w.turns; ++t)
    later.insert(later.end(), by_turn[size_t(t)].begin(), by_turn[size_t(t)].end());
  const std::vector<double> ttft_all = Ms(all), ttft_first = Ms(by_turn[0]), ttft_later = Ms(later);
  const double tok_s = wall > 0 ? double(tokens) / wall : 0;
  std::printf("overall: %zu requests, %d errors, %ld tokens in %.2f s: %.1f tokens/s\n", all.size(),
              errors, tokens, wall, tok_s);
  std::printf(
      "ttft ms: all turns p50 %.1f p99 %.1f | turn 1 p50 %.1f p99 %.1f | turns 2-%d p50 "
      "%.1f p99 %.1f\n",
      Pct(ttft_all, 0.5), Pct(ttft_all, 0.99), Pct(ttft_first, 0.5), Pct(ttft_first, 0.99), w.turns,
      Pct(ttft_later, 0.5), Pct(ttft_later, 0.99));
  int64_t prompt_tokens = -1, cached_tokens = -1;
  if (before && after) {
    prompt_tokens = after->prompt_tokens - before->prompt_tokens;
    cached_tokens = after->cached_prompt_tokens - before->cached_prompt_tokens;
    std::printf(
        "server: prompt tokens %lld, from the prefix cache %lld (%.1f%%), cache "
        "evictions %lld, preemptions %lld, blocks cached now %llu of %llu\n",
        (long long)prompt_tokens, (long long)cached_tokens,
        prompt_tokens > 0 ? 100.0 * double(cached_tokens) / double(prompt_tokens) : 0.0,
        (long long)(after->kv_cache_evictions - before->kv_cache_evictions),
        (long long)(after->kv_preemptions - before->kv_preemptions),
        (unsigned long long)after->kv_blocks_cached, (unsigned long long)after->kv_blocks_total);
  } else {
    std::printf("server: prefix cache counters unavailable\n");
  }
  for (const RequestRecord* r : all) {
    if (!r->error.empty())
      std::fprintf(stderr, "chat_bench: error: user %d turn %d: %s\n", r->user, r->turn + 1,
                   r->error.c_str());
  }
  std::printf(
      "summary%s%s users=%d turns=%d omit_max_tokens=%d requests=%zu errors=%d "
      "ttft_p50_ms=%.1f ttft_p99_ms=%.1f first_ttft_p50_ms=%.1f first_ttft_p99_ms=%.1f "
      "later_ttft_p50_ms=%.1f later_ttft_p99_ms=%.1f tok_s=%.1f wall_s=%.2f "
      "prompt_tokens=%lld cached_prompt_tokens=%lld\n",
      label.empty() ? "" : " label=", label.c_str(), users, w.turns, w.omit_max_tokens ? 1 : 0,
      all.size(), errors, Pct(ttft_all, 0.5), Pct(ttft_all, 0.99), Pct(ttft_first, 0.5),
      Pct(ttft_first, 0.99), Pct(ttft_later, 0.5), Pct(ttft_later, 0.99), tok_s, wall,
      (long long)prompt_tokens, (long long)cached_tokens);
  return errors;
}

}  // namespace

int main(int argc, char** argv) {
  paged::ParseFlags(argc, argv,
                    "chat_bench --server ADDR --users N --system-len S --turns T --user-len U "
                    "--reply-len R [--omit-max-tokens]");
  const int users = absl::GetFlag(FLAGS_users), turns = absl::GetFlag(FLAGS_turns);
  const int system_len = absl::GetFlag(FLAGS_system_len), user_len = absl::GetFlag(FLAGS_user_len);
  const int reply_len = absl::GetFlag(FLAGS_reply_len);
  const bool omit = absl::GetFlag(FLAGS_omit_max_tokens);
  if (users < 1 || turns < 1 || system_len < 1 || user_len < 1 || reply_len < 1) {
    std::fprintf(stderr,
                 "chat_bench: --users, --turns, --system-len, --user-len and --reply-len must be "
                 ">= 1\n");
    return 2;
  }
  auto client = pc::Client::Connect(absl::GetFlag(FLAGS_server), absl::GetFlag(FLAGS_token));
  if (!client.ok()) {
    std::fprintf(stderr, "chat_bench: %s\n", std::string(client.status().message()).c_str());
    return 1;
  }
  int vocab = absl::GetFlag(FLAGS_vocab), context = absl::GetFlag(FLAGS_context);
  if (vocab == 0 || context == 0) {
    auto models = client->ListModels();
    if (!models.ok() || models->empty()) {
      std::fprintf(stderr, "chat_bench: cannot read the model (%s): give --vocab and --context\n",
                   models.ok() ? "no model" : std::string(models.status().message()).c_str());
      return 1;
    }
    if (vocab == 0) vocab = models->front().vocab_size;
    if (context == 0) context = models->front().max_context;
  }
  if (vocab <= 3) {
    std::fprintf(stderr, "chat_bench: vocabulary of %d ids is too small\n", vocab);
    return 2;
  }
  const int last_prompt = system_len + turns * user_len + (turns - 1) * reply_len;
  if (last_prompt + reply_len > context) {
    std::fprintf(stderr,
                 "chat_bench: the last turn needs %d prompt + %d reply tokens; the context is %d\n",
                 last_prompt, reply_len, context);
    return 2;
  }

  Workload w;
  w.turns = turns;
  w.user_len = user_len;
  w.reply_len = reply_len;
  w.vocab = vocab;
  w.context = context;
  w.omit_max_tokens = omit;
  w.seed = absl::GetFlag(FLAGS_seed);
  w.request_timeout_s = absl::GetFlag(FLAGS_request_timeout);
  w.system.push_back(1);  // the same ids for every user
  {
    std::mt19937 rng{w.seed};
    std::uniform_int_distribution<int32_t> tok(3, vocab - 1);
    while (int(w.system.size()) < system_len) w.system.push_back(tok(rng));
  }
  const std::optional<pc::ServerStatus> before = ReadCounters(*client);

  std::vector<std::vector<RequestRecord>> records(static_cast<size_t>(users));
  std::latch start(users);  // all users start together
  w.t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int u = 0; u < users; ++u) {
    threads.emplace_back([&, u] {
      start.arrive_and_wait();
      records[size_t(u)] = RunConversation(*client, w, u);
    });
  }
  for (auto& t : threads) t.join();
  const std::optional<pc::ServerStatus> after = ReadCounters(*client);

  return Report(records, w, before, after, absl::GetFlag(FLAGS_label)) == 0 ? 0 : 1;
}
