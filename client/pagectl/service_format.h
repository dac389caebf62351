// How pagectl shows what a paged server answers: tables for people (colours
// only when asked), JSON for scripts. Pure functions: no I/O.
#pragma once

#include <google/protobuf/message.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "client/pagectl/commands.h"
#include "client/sdk/paged_client.h"
#include "paged/v1/admin.pb.h"

namespace paged::pagectl {

// One table cell; `ansi` is an SGR code ("32" green) used when colouring.
struct Cell {
  std::string text;
  const char* ansi = nullptr;
};
// Left-aligned columns two spaces apart; the first row is the header (bold
// when `color`). Widths come from the plain text, so colours never misalign.
std::string FormatTable(const std::vector<std::vector<Cell>>& rows, bool color);

// The service summary (model, store, queue, running, tokens/s, bytes paged/s,
// KV blocks) and then one row per worker: id, device, state, running,
// resident/paged layers, steps, tokens, restarts; then a line for each
// worker that pages experts: its expert cache's hit rate and size, and for
// each that runs the hybrid step: its host share and the bytes read in place.
std::string FormatStatus(const v1::StatusResponse& s, bool color);
// One row per worker with its memory plan and counters, then the hybrid
// step's line for each worker that runs it.
std::string FormatWorkers(const v1::StatusResponse& s, bool color);
std::string FormatSequences(const std::vector<v1::SequenceInfo>& seqs, bool color);
std::string FormatModels(const std::vector<v1::ModelInfo>& models, bool color);

// A message in the proto3 JSON mapping with the .proto field names (as grpcurl
// prints it; 64-bit integers are strings there).
nlohmann::json ProtoToJson(const google::protobuf::Message& m);

// generate --json: text, token_ids, finish_reason, usage, request_id, sequence_id.
nlohmann::json GenerateResultToJson(const client::GenerateResult& r);
// "30 tokens (prompt 1) in 0.52 s, first token 41 ms, 57.7 tokens/s, finish: length",
// the finish reason in its colour when `color`.
std::string FormatUsageLine(const client::GenerateResult& r, bool color = false);

// "1,2,3" or "1 2 3" -> {1, 2, 3}; INVALID_ARGUMENT naming the bad entry.
absl::StatusOr<std::vector<int32_t>> ParseTokenList(std::string_view text);

// The generation flags of `generate` and `chat` (-n, sampling, --ignore-eos,
// --timeout) onto `g`.
void ApplyGenerationFlags(const Flags& f, client::GenerateOptions* g);

// 1234567 -> "1.23 M"; rates in decimal units ("1.2 GB/s").
std::string FormatCount(double v);
std::string FormatRate(double bytes_per_s);

}  // namespace paged::pagectl
