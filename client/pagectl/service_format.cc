#include "client/pagectl/service_format.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/pagectl/terminal.h"
#include "common/size_flag.h"

namespace paged::pagectl {
namespace {

std::string Or(const std::string& s, const char* fallback) { return s.empty() ? fallback : s; }

// "cuda:0 experts: 74.0% from the cache (148 hits, 40 copied, 12 on the
// host), 30 evictions; cache 18 of 32 experts (2.25 MiB)", for a worker that
// pages experts; "" for one that pages whole layers.
std::string ExpertLine(const v1::WorkerInfo& w) {
  const v1::MemoryPlan& p = w.plan();
  const v1::WorkerCounters& c = w.counters();
  const uint64_t routed = c.expert_hits() + c.expert_misses() + c.expert_host();
  if (p.expert_slots() == 0 && routed == 0) return "";
  std::string line = absl::StrCat(w.worker_id(), " experts: ");
  if (routed == 0) {
    line += "none routed yet";
  } else {
    absl::StrAppend(
        &line,
        absl::StrFormat("%.1f%% from the cache (%d hits, %d copied, %d on the host), %d evictions",
                        100.0 * double(c.expert_hits()) / double(routed), c.expert_hits(),
                        c.expert_misses(), c.expert_host(), c.expert_evictions()));
    if (c.expert_prefetched() > 0)
      absl::StrAppend(&line, ", ", c.expert_prefetched(), " prefetched");
  }
  if (p.expert_slots() > 0) {
    absl::StrAppend(&line, "; cache ", p.expert_slots(), " of ", p.total_experts(), " experts (",
                    FormatBytes(p.expert_cache_bytes()), ")");
  }
  return line + "\n";
}

// "cuda:0 hybrid: host 84% of paged rows, 12.30 GiB read in place", for a
// worker that runs the hybrid step (docs/hybrid.md); "" for one that does not.
std::string HybridLine(const v1::WorkerInfo& w) {
  const v1::WorkerCounters& c = w.counters();
  if (c.host_weight_bytes() == 0 && c.host_share() <= 0) return "";
  return absl::StrFormat("%s hybrid: host %.0f%% of paged rows, %s read in place\n", w.worker_id(),
                         100.0 * c.host_share(), FormatBytes(c.host_weight_bytes()));
}

}  // namespace

std::string FormatTable(const std::vector<std::vector<Cell>>& rows, bool color) {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].text.size());
  }
  std::string out;
  for (size_t r = 0; r < rows.size(); ++r) {
    std::string line;
    for (size_t c = 0; c < rows[r].size(); ++c) {
      const Cell& cell = rows[r][c];
      std::string text = cell.text;
      if (c + 1 < rows[r].size()) text.append(width[c] - cell.text.size() + 2, ' ');
      line += Paint(text, r == 0 ? "1" : cell.ansi, color);
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

std::string FormatCount(double v) {
  if (v >= 1e9) return absl::StrFormat("%.2f G", v / 1e9);
  if (v >= 1e6) return absl::StrFormat("%.2f M", v / 1e6);
  if (v >= 1e4) return absl::StrFormat("%.1f k", v / 1e3);
  return absl::StrFormat("%.0f", v);
}

std::string FormatRate(double bytes_per_s) {
  if (bytes_per_s >= 1e9) return absl::StrFormat("%.2f GB/s", bytes_per_s / 1e9);
  if (bytes_per_s >= 1e6) return absl::StrFormat("%.1f MB/s", bytes_per_s / 1e6);
  if (bytes_per_s >= 1e3) return absl::StrFormat("%.1f kB/s", bytes_per_s / 1e3);
  return absl::StrFormat("%.0f B/s", bytes_per_s);
}

std::string FormatStatus(const v1::StatusResponse& s, bool color) {
  const double used_pct = s.kv_blocks_total() > 0
                              ? 100.0 * double(s.kv_blocks_used()) / double(s.kv_blocks_total())
                              : 0;
  int attached = 0;
  for (const v1::WorkerInfo& w : s.workers()) attached += w.state() == "ATTACHED";
  std::vector<std::vector<Cell>> summary = {
      {{"model"}, {Or(s.model(), "-")}},
      {{"ready"}, {""}},
      {{"store"}, {""}},
      {{"queue"}, {absl::StrCat(s.queue_depth(), " waiting, ", s.running_sequences(), " running")}},
      {{"throughput"},
       {absl::StrCat(absl::StrFormat("%.1f", s.tokens_per_s()), " tokens/s, ",
                     FormatRate(s.bytes_paged_per_s()), " paged")}},
      {{"KV blocks"},
       {absl::StrCat(s.kv_blocks_used(), " / ", s.kv_blocks_total(), " used",
                     absl::StrFormat(" (%.1f%%)", used_pct), ", ", s.kv_blocks_cached(), " cached",
                     s.waiting_for_kv() > 0
                         ? absl::StrCat(", ", s.waiting_for_kv(), " sequences waiting for blocks")
                         : "")}},
      {{"prefix cache"},
       {s.prompt_tokens() > 0
            ? absl::StrFormat("%.1f%% of prompt tokens from the cache (%d of %d), %d evictions",
                              100.0 * double(s.cached_prompt_tokens()) / double(s.prompt_tokens()),
                              s.cached_prompt_tokens(), s.prompt_tokens(), s.kv_cache_evictions())
            : std::string("no prompts yet")}},
      {{"workers"}, {absl::StrCat(attached, " attached of ", s.workers_size())}},
  };
  summary[1][1].text =
      s.ready() ? Paint("yes", kGreen, color)
                : Paint(absl::StrCat("no: ", Or(s.not_ready_reason(), "?")), kRed, color);
  // The store line carries its state in colour, and whether its process lives.
  summary[2][1].text = absl::StrCat(
      Paint(Or(s.store_state(), "?"), StateColor(s.store_state()), color), " (segment ",
      Or(s.segment(), "-"), ")",
      s.store_alive()
          ? (s.store_pid() > 0 ? absl::StrCat(", process ", s.store_pid()) : "")
          : Paint(", but no paged-store process holds it (dead or restarting)", kRed, color));
  std::string out;
  for (const auto& row : summary) {
    out += Paint(absl::StrFormat("%-12s", row[0].text), "1", color) + row[1].text + "\n";
  }
  // A supervisor's children that are not running, loudly.
  for (const v1::SupervisedProcess& p : s.supervised()) {
    if (p.state() == "RUNNING") continue;
    const bool loop = p.state() == "CRASH_LOOP";
    std::string line = absl::StrCat(
        "! ", p.name(), " is ", p.state(),
        loop ? absl::StrCat(": it failed ", p.failures_in_a_row(), " times in a row") : "",
        p.last_exit().empty() ? "" : absl::StrCat(" (last: ", p.last_exit(), ")"),
        p.next_restart_s() > 0 ? absl::StrFormat("; next try in %.0f s", p.next_restart_s()) : "",
        loop ? "; see its log (journalctl or paged-up's output)" : "");
    out += Paint(line, loop || p.state() == "FAILED" ? kRed : kYellow, color) + "\n";
  }
  if (s.workers_size() == 0) return out;
  std::vector<std::vector<Cell>> rows = {{{"WORKER"},
                                          {"DEVICE"},
                                          {"STATE"},
                                          {"RUNNING"},
                                          {"RESIDENT/PAGED"},
                                          {"STEPS"},
                                          {"TOKENS"},
                                          {"RESTARTS"}}};
  for (const v1::WorkerInfo& w : s.workers()) {
    rows.push_back({{w.worker_id()},
                    {w.device()},
                    {w.state(), StateColor(w.state())},
                    {absl::StrCat(w.running_sequences())},
                    {absl::StrCat(w.plan().resident_layers(), "/", w.plan().paged_layers())},
                    {absl::StrCat(w.counters().steps())},
                    {absl::StrCat(w.counters().tokens())},
                    {absl::StrCat(w.restarts()), w.restarts() > 0 ? kYellow : nullptr}});
  }
  out += "\n" + FormatTable(rows, color);
  for (const v1::WorkerInfo& w : s.workers()) out += ExpertLine(w) + HybridLine(w);
  return out;
}

std::string FormatWorkers(const v1::StatusResponse& s, bool color) {
  if (s.workers_size() == 0) return "no workers attached\n";
  std::vector<std::vector<Cell>> rows = {{{"WORKER"},
                                          {"DEVICE"},
                                          {"STATE"},
                                          {"RUNNING"},
                                          {"BUDGET"},
                                          {"PLANNED"},
                                          {"SLOTS"},
                                          {"RESIDENT/PAGED"},
                                          {"KV CACHE"},
                                          {"PAGED/STEP"},
                                          {"STEPS"},
                                          {"TOKENS"},
                                          {"H2D"},
                                          {"BUSY"},
                                          {"RESTARTS"}}};
  for (const v1::WorkerInfo& w : s.workers()) {
    const v1::MemoryPlan& p = w.plan();
    const v1::WorkerCounters& c = w.counters();
    rows.push_back({{w.worker_id()},
                    {w.device()},
                    {w.state(), StateColor(w.state())},
                    {absl::StrCat(w.running_sequences())},
                    {FormatBytes(p.budget_bytes())},
                    {FormatBytes(p.planned_bytes())},
                    {absl::StrCat(p.slots())},
                    {absl::StrCat(p.resident_layers(), "/", p.paged_layers())},
                    {absl::StrCat(p.kv_cache_blocks(), " blocks")},
                    {FormatBytes(p.paged_bytes_per_step())},
                    {absl::StrCat(c.steps())},
                    {absl::StrCat(c.tokens())},
                    {FormatBytes(c.h2d_bytes())},
                    {absl::StrFormat("%.1f s", c.busy_s())},
                    {absl::StrCat(w.restarts()), w.restarts() > 0 ? kYellow : nullptr}});
  }
  std::string out = FormatTable(rows, color);
  for (const v1::WorkerInfo& w : s.workers()) out += ExpertLine(w) + HybridLine(w);
  return out;
}

std::string FormatSequences(const std::vector<v1::SequenceInfo>& seqs, bool color) {
  if (seqs.empty()) return "no sequences\n";
  std::vector<std::vector<Cell>> rows = {
      {{"ID"}, {"REQUEST"}, {"STATE"}, {"WORKER"}, {"PROMPT"}, {"GENERATED"}}};
  for (const v1::SequenceInfo& q : seqs) {
    rows.push_back({{absl::StrCat(q.sequence_id())},
                    {Or(q.request_id(), "-")},
                    {q.state(), StateColor(q.state())},
                    {Or(q.worker_id(), "-")},
                    {absl::StrCat(q.prompt_tokens())},
                    {absl::StrCat(q.generated_tokens())}});
  }
  return FormatTable(rows, color);
}

std::string FormatModels(const std::vector<v1::ModelInfo>& models, bool color) {
  if (models.empty()) return "no models\n";
  std::vector<std::vector<Cell>> rows = {{{"NAME"},
                                          {"ARCHITECTURE"},
                                          {"LAYERS"},
                                          {"HIDDEN"},
                                          {"VOCAB"},
                                          {"CONTEXT"},
                                          {"WEIGHTS"},
                                          {"CHAT"}}};
  for (const v1::ModelInfo& m : models) {
    rows.push_back({{m.name()},
                    {m.architecture()},
                    {absl::StrCat(m.n_layers())},
                    {absl::StrCat(m.hidden_size())},
                    {absl::StrCat(m.vocab_size())},
                    {absl::StrCat(m.max_context())},
                    {m.weight_format()},
                    {Or(m.chat_template(), "-"), m.chat_template().empty() ? kDim : nullptr}});
  }
  return FormatTable(rows, color);
}

nlohmann::json ProtoToJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.always_print_primitive_fields = true;
  opts.preserve_proto_field_names = true;
  std::string text;
  if (!google::protobuf::util::MessageToJsonString(m, &text, opts).ok())
    return nlohmann::json::object();
  return nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
}

nlohmann::json GenerateResultToJson(const client::GenerateResult& r) {
  return {{"text", r.text},
          {"token_ids", r.token_ids},
          {"finish_reason", FinishReasonName(r.finish_reason)},
          {"request_id", r.request_id},
          {"sequence_id", r.sequence_id},
          {"usage",
           {{"prompt_tokens", r.usage.prompt_tokens},
            {"generated_tokens", r.usage.generated_tokens},
            {"time_to_first_token_s", r.usage.time_to_first_token_s},
            {"total_s", r.usage.total_s},
            {"step_s", r.usage.step_s}}}};
}

std::string FormatUsageLine(const client::GenerateResult& r, bool color) {
  const client::Usage& u = r.usage;
  std::string line = absl::StrCat(u.generated_tokens, " tokens (prompt ", u.prompt_tokens, ")");
  if (u.total_s > 0) {
    absl::StrAppend(&line, absl::StrFormat(" in %.2f s, first token %.0f ms, %.1f tokens/s",
                                           u.total_s, u.time_to_first_token_s * 1e3,
                                           double(u.generated_tokens) / u.total_s));
  }
  const char* reason = FinishReasonName(r.finish_reason);
  absl::StrAppend(&line, ", finish: ", Paint(reason, FinishReasonColor(reason), color));
  return line;
}

absl::StatusOr<std::vector<int32_t>> ParseTokenList(std::string_view text) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(absl::string_view(text.data(), text.size()),
                                               absl::ByAnyChar(", "), absl::SkipEmpty())) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(part, &id) || id < 0) {
      return absl::InvalidArgumentError(absl::StrCat("bad token id '", std::string(part),
                                                     "' (want non-negative integers like 1,2,3)"));
    }
    ids.push_back(id);
  }
  if (ids.empty()) return absl::InvalidArgumentError("no token ids (want a list like 1,2,3)");
  return ids;
}

void ApplyGenerationFlags(const Flags& f, client::GenerateOptions* g) {
  g->max_tokens = f.max_tokens;
  g->temperature = f.temperature;
  g->top_k = f.top_k;
  g->top_p = f.top_p;
  g->seed = f.seed;
  g->ignore_eos = f.ignore_eos;
  if (f.timeout > absl::ZeroDuration()) g->timeout = f.timeout;
}

}  // namespace paged::pagectl
