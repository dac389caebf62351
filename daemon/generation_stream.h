// One generation as a front end streams it: a paged.v1.GenerateRequest
// parsed (Coordinator::ParseRequest) and admitted, its committed tokens taken
// from the coordinator's channel and turned into showable text (TextStream:
// stop strings, UTF-8 held back), the usage, and its final status counted in
// the coordinator's metrics. Both front ends drive one: the gRPC Generate
// handler blocks in Next(50 ms) on its own thread; the HTTP API calls
// Next(0) from its event loop when the coordinator's on_update says there is
// something to take.
//
// Not thread-safe: one caller at a time. The destructor releases the
// sequence (cancelling it when it is still live).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/coordinator.h"
#include "daemon/text_stream.h"
#include "paged/v1/inference.pb.h"

namespace paged {

class GenerationStream {
 public:
  // How the generation ended, as its client sees it.

  struct Options {
    TimeUs deadline = 0;  // on Coordinator::Now()'s clock; 0: none
    // max_tokens 0 means as many as fit after the prompt (the model's context
    // and the KV pool), as OpenAI's chat API does; otherwise 0 is an error.
    bool fill_max_tokens = false;
    std::function<void()> on_update;   // Coordinator::Channel::on_update
    std::function<void()> on_stalled;  // Coordinator::Channel::on_stalled
  };

  struct Chunk {
    std::vector<int32_t> token_ids;  // newly committed, each exactly once
    std::string text;                // their text that can be shown now (may be empty)
    bool done = false;
    // When done:
    FinishReason end = FinishReason::kNone;
    std::string tail;   // text held back until the end; follows `text`
    std::string error;  // kError: why
  };

  // Parses and admits `req` (or, with `resume` set, claims its restored
  // sequence: Coordinator::Resume; the stream then skips the tokens the
  // client received, their text included). Fails with the parse, admission
  // or resume status (then the request counts as rejected in the metrics).
  static absl::StatusOr<std::unique_ptr<GenerationStream>> Start(Coordinator& coordinator,
                                                                 const v1::GenerateRequest& req,
                                                                 Options options);
  ~GenerationStream();
  GenerationStream(const GenerationStream&) = delete;
  GenerationStream& operator=(const GenerationStream&) = delete;

  // Waits up to `timeout` (0: not at all) for tokens or the end, and takes
  // them. Once done, the sequence is released and the status counted; later
  // calls return an empty chunk with done set.
  Chunk Next(std::chrono::milliseconds timeout);
  // The client went away: cancels the sequence (counted as cancelled).
  void Cancel();

  int64_t sequence_id() const { return seq_id_; }
  int32_t prompt_tokens() const { return usage_.prompt_tokens(); }
  // Generated tokens, time to first token and step times so far; total_s once done.
  const v1::Usage& usage() const { return usage_; }
  bool done() const { return end_ != FinishReason::kNone; }
  FinishReason end() const { return end_; }

 private:
  GenerationStream(Coordinator& c, std::shared_ptr<Coordinator::Channel> ch,
                   std::vector<std::string> stop_strings, int32_t prompt_tokens,
                   int32_t last_prompt_token, int32_t skip);
  void Finish(FinishReason end);

  Coordinator& coord_;
  const std::shared_ptr<Coordinator::Channel> ch_;
  const int64_t seq_id_;
  TextStream text_;
  v1::Usage usage_;
  int32_t prev_;  // the token the next one's text follows
  int32_t skip_;  // resumed: generated tokens the client has (not sent again)
  FinishReason end_ = FinishReason::kNone;
};

// "length", "eos", "stop", "cancelled", "error", "deadline", "shutdown".

}  // namespace paged
