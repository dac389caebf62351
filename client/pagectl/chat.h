// pagectl chat: a conversation with the served model over the gRPC API.
//
// Each input line is one user message; the whole conversation (after an
// optional --system message) is sent as a chat prompt, rendered by the server
// with the model's chat template, and the reply streams to the output as it
// is committed, then joins the conversation. "/reset" forgets the
// conversation, "/exit" (or the end of the input) ends it; any other
// "/word" is refused (a line with a space is a message). With --json each
// turn prints one JSON object on one line instead of the streamed text.
#pragma once

#include <iosfwd>

#include "client/pagectl/commands.h"
#include "client/sdk/paged_client.h"

namespace paged::pagectl {

struct ChatIo {
  std::istream* in = nullptr;   // user lines
  std::ostream* out = nullptr;  // replies (or JSON lines)
  std::ostream* err = nullptr;  // prompts, notes, usage and errors
  // A person at a terminal: a prompt before each line, a usage line after each
  // reply, and a failed turn does not end the chat. Otherwise the first
  // failed turn ends it with exit code 1.
  bool interactive = false;
  bool color = false;  // ANSI colours on `err` (and on `out` for the prompt echo)
};

// The chat loop against `c` (see above). Returns the exit code: 0 at the end
// of the input or /exit, 1 after a failed turn when not interactive.
int RunChat(const Flags& f, const client::Client& c, const ChatIo& io);

// The GenerateOptions of one turn: sampling and limits from `f`, the
// conversation as messages (the --system message first when set).
client::GenerateOptions ChatTurnOptions(const Flags& f,
                                        const std::vector<client::ChatMessage>& conversation);

}  // namespace paged::pagectl
