#include "daemon/generation_stream.h"

#include <algorithm>

namespace paged {
namespace {

constexpr int32_t kStartOfSequence = -1;  // Tokenizer::kStartOfSequence

// A finished sequence's reason as its stream's ending (a sequence that
// finished without one failed).
FinishReason EndOf(FinishReason r) { return r == FinishReason::kNone ? FinishReason::kError : r; }

RequestStatus StatusOf(FinishReason e) {
  switch (e) {
    case FinishReason::kLength:
      return RequestStatus::kLength;
    case FinishReason::kEos:
      return RequestStatus::kEos;
    case FinishReason::kStop:
      return RequestStatus::kStop;
    case FinishReason::kCancelled:
    case FinishReason::kShutdown:
      return RequestStatus::kCancelled;
    case FinishReason::kDeadline:
      return RequestStatus::kDeadline;
    case FinishReason::kError:
    case FinishReason::kNone:
      break;
  }
  return RequestStatus::kError;
}

// As many new tokens as the context and the pool leave after the prompt
// (at least 1, so that a prompt that fills them gets the scheduler's error).
int32_t FillMaxTokens(const SchedulerConfig& c, size_t prompt) {
  const int64_t room =
      std::min<int64_t>(c.max_context, int64_t(c.total_blocks) * c.block_tokens) - int64_t(prompt);
  return int32_t(std::max<int64_t>(room, 1));
}

}  // namespace

absl::StatusOr<std::unique_ptr<GenerationStream>> GenerationStream::Start(
    Coordinator& coordinator, const v1::GenerateRequest& req, Options options) {
  absl::StatusOr<ParsedGenerate> parsed = coordinator.ParseRequest(req);
  if (!parsed.ok()) {
    coordinator.metrics().CountRequest(RequestStatus::kRejected);
    return parsed.status();
  }
  Request& r = parsed->request;
  r.deadline = options.deadline;
  if (options.fill_max_tokens && r.max_tokens == 0)
    r.max_tokens = FillMaxTokens(coordinator.options().scheduler, r.prompt.size());
  const int32_t prompt_tokens = int32_t(r.prompt.size());
  const int32_t last = r.prompt.empty() ? kStartOfSequence : r.prompt.back();
  const bool resume = req.has_resume();
  absl::StatusOr<std::shared_ptr<Coordinator::Channel>> ch =
      resume ? coordinator.Resume(r.request_id, r.prompt, req.resume().received(),
                                  std::move(options.on_update), std::move(options.on_stalled))
             : coordinator.Admit(std::move(r), std::move(options.on_update),
                                 std::move(options.on_stalled));
  if (!ch.ok()) {
    coordinator.metrics().CountRequest(RequestStatus::kRejected);
    return ch.status();
  }
  if (!resume) coordinator.metrics().prompt_tokens.Inc(prompt_tokens);
  return std::unique_ptr<GenerationStream>(
      new GenerationStream(coordinator, std::move(*ch), std::move(parsed->stop_strings),
                           prompt_tokens, last, resume ? req.resume().received() : 0));
}

GenerationStream::GenerationStream(Coordinator& c, std::shared_ptr<Coordinator::Channel> ch,
                                   std::vector<std::string> stop_strings, int32_t prompt_tokens,
                                   int32_t last_prompt_token, int32_t skip)
    : coord_(c),
      ch_(std::move(ch)),
      seq_id_(ch_->seq_id),
      text_(std::move(stop_strings)),
      prev_(last_prompt_token),
      skip_(skip) {
  usage_.set_prompt_tokens(prompt_tokens);
}

GenerationStream::~GenerationStream() { Cancel(); }

void GenerationStream::Cancel() {
  if (!done()) Finish(FinishReason::kCancelled);
}

void GenerationStream::Finish(FinishReason end) {
  end_ = end;
  usage_.set_total_s(double(Coordinator::Now() - ch_->admitted_at) * 1e-6);
  coord_.Release(*ch_);  // cancels the sequence if it is still live (stop string, client gone)
  coord_.metrics().CountRequest(StatusOf(end));
}

GenerationStream::Chunk GenerationStream::Next(std::chrono::milliseconds timeout) {
  Chunk c;
  if (done()) {
    c.done = true;
    c.end = end_;
    return c;
  }
  Coordinator::Update u;
  if (!coord_.Wait(*ch_, timeout, &u)) {
    Finish(FinishReason::kShutdown);
    c.done = true;
    c.end = end_;
    return c;
  }
  const auto* tok = coord_.tokenizer();
  for (size_t i = 0; i < u.tokens.size() && !text_.stopped(); ++i) {
    const int32_t t = u.tokens[i];
    if (usage_.generated_tokens() == 0) {
      const double ttft = double(Coordinator::Now() - ch_->admitted_at) * 1e-6;
      usage_.set_time_to_first_token_s(ttft);
      usage_.set_cached_prompt_tokens(coord_.CachedPromptTokens(seq_id_));
      coord_.metrics().time_to_first_token.Observe(ttft);
    }
    usage_.set_generated_tokens(usage_.generated_tokens() + 1);
    usage_.add_step_s(u.step_s[i]);
    const bool skipped = usage_.generated_tokens() <= skip_;  // the client has it
    if (!skipped) c.token_ids.push_back(t);
    // The eos or stop id that ends the sequence is streamed as an id, not as text.
    const bool ends = u.finished && i + 1 == u.tokens.size() &&
                      (u.reason == FinishReason::kEos || u.reason == FinishReason::kStop);
    if (tok != nullptr && !ends) text_.Append(tok->DecodePiece(prev_, t));
    prev_ = t;
    // The text its client was shown; what the stream held back then follows.
    if (skipped) text_.TakeReady();
  }
  c.text = text_.TakeReady();
  if (!text_.stopped() && !u.finished) return c;
  c.done = true;
  c.end = text_.stopped()    ? FinishReason::kStop
          : !u.error.empty() ? FinishReason::kError
                             : EndOf(u.reason);
  c.error =
      c.end == FinishReason::kError ? (u.error.empty() ? "the sequence failed" : u.error) : "";
  c.tail = text_.TakeAll();
  Finish(c.end);
  return c;
}

}  // namespace paged
