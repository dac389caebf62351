// pagectl's commands that talk to a running server through the C++ SDK:
// generate, status, workers, sequences, cancel, drain, models (chat is in
// chat.cc).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <iterator>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/pagectl/commands.h"
#include "client/pagectl/load_progress.h"
#include "client/pagectl/service_format.h"
#include "client/pagectl/terminal.h"
#include "client/sdk/paged_client.h"

namespace paged::pagectl {
namespace {

// One line on stderr, exit 2 for what the user got wrong, else 1.
int Fail(const char* command, const absl::Status& s) {
  std::fprintf(stderr, "pagectl %s: %s: %s\n", command, absl::StatusCodeToString(s.code()).c_str(),
               std::string(s.message()).c_str());
  return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

// Colours only for a person at a terminal.
bool UseColor() { return StdoutColor(); }

absl::Duration UnaryTimeout(const Flags& f) {
  return f.timeout > absl::ZeroDuration() ? f.timeout : client::kDefaultTimeout;
}

absl::StatusOr<client::Client> Connect(const Flags& f) {
  client::ConnectOptions opts;
  if (f.timeout > absl::ZeroDuration())
    opts.connect_timeout = std::min(f.timeout, opts.connect_timeout);
  opts.tls = f.tls;
  return client::Client::Connect(f.server, f.token, opts);
}

void PrintJson(const nlohmann::json& j) { std::printf("%s\n", j.dump(2).c_str()); }

}  // namespace

int GenerateCommand(const Flags& f) {
  client::GenerateOptions g;
  if (!f.prompt.empty() && !f.prompt_tokens.empty()) {
    std::fprintf(stderr, "pagectl generate: give --prompt TEXT or --prompt-tokens IDS, not both\n");
    return 2;
  }
  if (f.prompt == "-") {
    g.prompt.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    if (g.prompt.empty()) {
      std::fprintf(stderr, "pagectl generate: --prompt -: stdin is empty\n");
      return 2;
    }
  } else if (!f.prompt.empty()) {
    g.prompt = f.prompt;
  } else if (!f.prompt_tokens.empty()) {
    auto ids = ParseTokenList(f.prompt_tokens);
    if (!ids.ok()) return Fail("generate", ids.status());
    g.prompt_tokens = *std::move(ids);
  } else {
    std::fprintf(stderr,
                 "pagectl generate: give a prompt: --prompt TEXT (or - for stdin) or "
                 "--prompt-tokens 1,2,3\n");
    return 2;
  }
  if (f.max_tokens <= 0) {
    std::fprintf(stderr, "pagectl generate: -n must be > 0 (got %d)\n", f.max_tokens);
    return 2;
  }
  ApplyGenerationFlags(f, &g);
  // Bad arguments are answered before connecting.
  if (absl::Status s = client::ValidateGenerateOptions(g); !s.ok()) return Fail("generate", s);

  auto c = Connect(f);
  if (!c.ok()) return Fail("generate", c.status());
  bool wrote_any = false;
  char last = '\n';
  // A person at a terminal reads the completion after its prompt (in bold);
  // a pipe gets the completion only.
  if (!f.json && !g.prompt.empty() && UseColor()) {
    std::printf("\033[1m%s\033[0m", g.prompt.c_str());
    wrote_any = true;
    last = g.prompt.back();
  }
  auto on_token = [&](const client::TokenChunk& chunk) {
    if (f.json || chunk.text.empty()) return;
    std::fwrite(chunk.text.data(), 1, chunk.text.size(), stdout);
    std::fflush(stdout);
    wrote_any = true;
    last = chunk.text.back();
  };
  auto r = c->Generate(g, on_token);
  if (wrote_any && last != '\n') std::fputc('\n', stdout);
  std::fflush(stdout);
  if (!r.ok()) return Fail("generate", r.status());
  if (f.json) {
    PrintJson(GenerateResultToJson(*r));
  } else {
    std::fprintf(stderr, "[%s]\n", FormatUsageLine(*r, StderrColor()).c_str());
  }
  return r->finish_reason == client::FinishReason::kError ? 1 : 0;
}

namespace {

// Waits until the service can generate: with --segment, first the store's
// segment (a progress bar while it is LOADING), then the coordinator's
// Status until the store is READY and a worker is ATTACHED. At most
// --timeout (none when 0). Progress goes to stderr: a bar on a terminal,
// plain lines otherwise.
absl::Status WaitReady(const Flags& f) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto now_s = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
  const double limit_s = f.timeout > absl::ZeroDuration() ? absl::ToDoubleSeconds(f.timeout) : 0;
  const bool terminal = ::isatty(STDERR_FILENO) == 1;
  ProgressDisplay shown(
      [](const std::string& s) {
        std::fputs(s.c_str(), stderr);
        std::fflush(stderr);
      },
      terminal, TerminalColumns(STDERR_FILENO));
  std::string waiting;  // what we wait for ("a worker to attach"), for the timeout's message
  auto expired = [&] { return limit_s > 0 && now_s() > limit_s; };
  auto timed_out = [&] {
    shown.Finish("");
    return absl::DeadlineExceededError(absl::StrCat(
        "not ready within ", absl::FormatDuration(f.timeout), ": still waiting for ", waiting));
  };
  constexpr auto kPoll = std::chrono::milliseconds(200);
  // 1. The segment.
  while (!f.segment.empty()) {
    absl::StatusOr<LoadProgress> p = ReadLoadProgress(f.segment);
    if (p.ok() && p->state == "READY") break;
    if (!p.ok() && p.status().code() != absl::StatusCode::kNotFound) {
      shown.Finish("");
      return p.status();
    }
    if (!p.ok() || p->state != "LOADING") {
      waiting = absl::StrCat("segment ", f.segment,
                             p.ok() ? ": paged-store is creating it"
                                    : ": it does not exist yet (is paged-store starting?)");
      shown.Note(absl::StrCat("pagectl: waiting for ", waiting), now_s());
    } else {
      waiting = absl::StrCat("paged-store to load segment ", f.segment);
      shown.Update(absl::StrCat("loading ", f.segment), p->done, p->total, now_s());
    }
    if (expired()) return timed_out();
    std::this_thread::sleep_for(kPoll);
  }
  // 2. The coordinator and a worker.
  for (;;) {
    client::ConnectOptions opts;
    opts.connect_timeout = absl::Seconds(1);
    opts.tls = f.tls;
    absl::StatusOr<client::Client> c = client::Client::Connect(f.server, f.token, opts);
    if (c.ok()) {
      auto s = c->Status(absl::Seconds(5));
      if (s.ok()) {
        if (s->ready) break;
        // The coordinator says why it is not ready (the store, the workers).
        waiting = s->not_ready_reason == "no worker is attached"
                      ? absl::StrCat("a worker to attach (", s->workers.size(), " known)")
                      : absl::StrCat("readiness (", s->not_ready_reason, ")");
      } else if (s.status().code() == absl::StatusCode::kUnauthenticated) {
        shown.Finish("");
        return s.status();
      } else {
        waiting = absl::StrCat("paged at ", f.server, ": ", s.status().message());
      }
    } else if (c.status().code() == absl::StatusCode::kInvalidArgument) {
      shown.Finish("");
      return c.status();
    } else {
      waiting = absl::StrCat("paged at ", f.server, " (", c.status().message(), ")");
    }
    shown.Note(absl::StrCat("pagectl: waiting for ", waiting), now_s());
    if (expired()) return timed_out();
    std::this_thread::sleep_for(kPoll);
  }
  shown.Finish(terminal ? "" : absl::StrFormat("pagectl: ready after %.1f s", now_s()));
  return absl::OkStatus();
}

}  // namespace

int StatusCommand(const Flags& f) {
  if (f.wait_ready) {
    if (absl::Status s = WaitReady(f); !s.ok()) return Fail("status", s);
  }
  auto c = Connect(f);
  if (!c.ok()) return Fail("status", c.status());
  auto s = client::wire::Status(*c, f.wait_ready ? client::kDefaultTimeout : UnaryTimeout(f));
  if (!s.ok()) return Fail("status", s.status());
  if (f.json) {
    PrintJson(ProtoToJson(*s));
  } else {
    std::fputs(FormatStatus(*s, UseColor()).c_str(), stdout);
  }
  return 0;
}

int WorkersCommand(const Flags& f) {
  auto c = Connect(f);
  if (!c.ok()) return Fail("workers", c.status());
  auto s = client::wire::Status(*c, UnaryTimeout(f));
  if (!s.ok()) return Fail("workers", s.status());
  if (f.json) {
    nlohmann::json workers = nlohmann::json::array();
    for (const v1::WorkerInfo& w : s->workers()) workers.push_back(ProtoToJson(w));
    PrintJson({{"workers", workers}});
  } else {
    std::fputs(FormatWorkers(*s, UseColor()).c_str(), stdout);
  }
  return 0;
}

int SequencesCommand(const Flags& f) {
  auto c = Connect(f);
  if (!c.ok()) return Fail("sequences", c.status());
  auto seqs = client::wire::ListSequences(*c, UnaryTimeout(f));
  if (!seqs.ok()) return Fail("sequences", seqs.status());
  if (f.json) {
    nlohmann::json list = nlohmann::json::array();
    for (const v1::SequenceInfo& q : *seqs) list.push_back(ProtoToJson(q));
    PrintJson({{"sequences", list}});
  } else {
    std::fputs(FormatSequences(*seqs, UseColor()).c_str(), stdout);
  }
  return 0;
}

int CancelCommand(const Flags& f) {
  uint64_t id = 0;
  if (!absl::SimpleAtoi(f.args[0], &id)) {
    std::fprintf(stderr, "pagectl cancel: '%s' is not a sequence id (see pagectl sequences)\n",
                 f.args[0].c_str());
    return 2;
  }
  auto c = Connect(f);
  if (!c.ok()) return Fail("cancel", c.status());
  if (absl::Status s = c->Cancel(id, UnaryTimeout(f)); !s.ok()) return Fail("cancel", s);
  if (f.json) {
    PrintJson({{"cancelled", id}});
  } else {
    std::printf("cancelled sequence %llu\n", static_cast<unsigned long long>(id));
  }
  return 0;
}

int DrainCommand(const Flags& f) {
  auto c = Connect(f);
  if (!c.ok()) return Fail("drain", c.status());
  if (absl::Status s = c->Drain(f.args[0], UnaryTimeout(f)); !s.ok()) return Fail("drain", s);
  if (f.json) {
    PrintJson({{"draining", f.args[0]}});
  } else {
    std::printf("draining worker %s: it finishes its sequences and takes no new ones\n",
                f.args[0].c_str());
  }
  return 0;
}

int ModelsCommand(const Flags& f) {
  auto c = Connect(f);
  if (!c.ok()) return Fail("models", c.status());
  auto models = client::wire::ListModels(*c, UnaryTimeout(f));
  if (!models.ok()) return Fail("models", models.status());
  if (f.json) {
    nlohmann::json list = nlohmann::json::array();
    for (const v1::ModelInfo& m : *models) list.push_back(ProtoToJson(m));
    PrintJson({{"models", list}});
  } else {
    std::fputs(FormatModels(*models, UseColor()).c_str(), stdout);
  }
  return 0;
}

}  // namespace paged::pagectl
