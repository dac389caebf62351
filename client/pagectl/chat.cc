#include "client/pagectl/chat.h"

#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/pagectl/service_format.h"
#include "client/pagectl/terminal.h"

namespace paged::pagectl {
namespace {

std::string TrimLine(std::string s) {
  if (!s.empty() && s.back() == '\r') s.pop_back();  // CRLF input
  const size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

void PrintError(const ChatIo& io, const absl::Status& s) {
  *io.err << "pagectl chat: " << absl::StatusCodeToString(s.code()) << ": " << s.message() << "\n";
  io.err->flush();
}

}  // namespace

client::GenerateOptions ChatTurnOptions(const Flags& f,
                                        const std::vector<client::ChatMessage>& conversation) {
  client::GenerateOptions g;
  if (!f.system.empty()) g.messages.push_back({"system", f.system});
  g.messages.insert(g.messages.end(), conversation.begin(), conversation.end());
  g.add_generation_prompt = true;
  ApplyGenerationFlags(f, &g);
  return g;
}

int RunChat(const Flags& f, const client::Client& c, const ChatIo& io) {
  std::vector<client::ChatMessage> conversation;
  int turn = 0;
  std::string line;
  for (;;) {
    if (io.interactive) {
      *io.err << Paint("you> ", kBold, io.color);
      io.err->flush();
    }
    if (!std::getline(*io.in, line)) {
      if (io.interactive) *io.err << "\n";
      return 0;
    }
    line = TrimLine(std::move(line));
    if (line.empty()) continue;
    if (line == "/exit" || line == "/quit") return 0;
    if (line == "/reset") {
      conversation.clear();
      if (io.interactive) *io.err << Paint("(conversation cleared)", kDim, io.color) << "\n";
      continue;
    }
    if (line[0] == '/' && line.find(' ') == std::string::npos) {
      *io.err << "pagectl chat: unknown command " << line
              << " (/reset clears the conversation, /exit ends it)\n";
      continue;
    }
    conversation.push_back({"user", line});
    const client::GenerateOptions g = ChatTurnOptions(f, conversation);
    bool wrote_any = false;
    char last = '\n';
    auto on_token = [&](const client::TokenChunk& chunk) {
      if (f.json || chunk.text.empty()) return;
      std::string text = chunk.text;
      // The reply's first piece usually starts with the space the template
      // put after the prompt's end; a person does not need it.
      if (!wrote_any) {
        text.erase(0, text.find_first_not_of(' '));
        if (text.empty()) return;
      }
      *io.out << text;
      io.out->flush();
      wrote_any = true;
      last = text.back();
    };
    absl::StatusOr<client::GenerateResult> r = c.Generate(g, on_token);
    if (wrote_any && last != '\n') *io.out << "\n";
    io.out->flush();
    const bool failed = !r.ok() || r->finish_reason == client::FinishReason::kError;
    if (!r.ok()) {
      PrintError(io, r.status());
    } else if (f.json) {
      nlohmann::json j = GenerateResultToJson(*r);
      j["turn"] = turn;
      j["user"] = line;
      *io.out << j.dump() << "\n";
      io.out->flush();
    } else if (io.interactive) {
      *io.err << "[" << FormatUsageLine(*r, io.color) << "]\n";
    }
    if (failed) {
      conversation.pop_back();  // the turn did not happen
      if (r.ok()) *io.err << "pagectl chat: the server ended the reply with an error\n";
      if (!io.interactive) return 1;
      continue;
    }
    conversation.push_back({"assistant", r->text});
    ++turn;
  }
}

int ChatCommand(const Flags& f) {
  if (f.max_tokens <= 0) {
    std::fprintf(stderr, "pagectl chat: -n / --max-tokens must be > 0 (got %d)\n", f.max_tokens);
    return 2;
  }
  // Bad sampling arguments are answered before connecting.
  if (absl::Status s = client::ValidateGenerateOptions(ChatTurnOptions(f, {{"user", "x"}}));
      !s.ok()) {
    std::fprintf(stderr, "pagectl chat: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  client::ConnectOptions opts;
  if (f.timeout > absl::ZeroDuration())
    opts.connect_timeout = std::min(f.timeout, opts.connect_timeout);
  opts.tls = f.tls;
  absl::StatusOr<client::Client> c = client::Client::Connect(f.server, f.token, opts);
  if (!c.ok()) {
    std::fprintf(stderr, "pagectl chat: %s: %s\n",
                 absl::StatusCodeToString(c.status().code()).c_str(),
                 std::string(c.status().message()).c_str());
    return 1;
  }
  ChatIo io;
  io.in = &std::cin;
  io.out = &std::cout;
  io.err = &std::cerr;
  io.interactive = ::isatty(STDIN_FILENO) == 1;
  io.color = StderrColor();
  if (io.interactive) {
    // Which model, and whether it can chat at all.
    auto models = client::wire::ListModels(*c);
    if (models.ok() && !models->empty()) {
      const v1::ModelInfo& m = models->front();
      std::cerr << Paint(absl::StrCat("chatting with ", m.name(), " at ", f.server), kDim,
                         io.color);
      if (!m.chat_template().empty())
        std::cerr << Paint(" (" + m.chat_template() + " format)", kDim, io.color);
      std::cerr << "\n";
      if (m.chat_template().empty()) {
        std::cerr << "pagectl chat: warning: the server has no chat template for this model; start "
                     "paged with --chat-template NAME\n";
      }
    }
    std::cerr << Paint("/reset clears the conversation, /exit or Ctrl-D ends it", kDim, io.color)
              << "\n";
  }
  return RunChat(f, *c, io);
}

}  // namespace paged::pagectl
