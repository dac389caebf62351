// Generates text from a prompt with a paged server and prints it as it is
// streamed.
//
//   sdk_client [SERVER] [PROMPT] [MAX_TOKENS]
//   sdk_client unix:///tmp/paged.sock "Once upon a time" 64
//
// SERVER is unix:///path/to.sock or host:port; $PAGED_TOKEN, when set, is
// sent as the bearer token. Exits 1 with the error's code and message when
// the server cannot be reached or refuses the request.
#include <paged/client.h>

#include <cstdio>
#include <cstdlib>
#include <string>

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "sdk_client: %s\n", status.ToString().c_str());
  return 1;
}

int main(int argc, char** argv) {
  const std::string server = argc > 1 ? argv[1] : "unix:///tmp/paged.sock";
  const char* token = std::getenv("PAGED_TOKEN");

  absl::StatusOr<paged::client::Client> client =
      paged::client::Client::Connect(server, token != nullptr ? token : "");
  if (!client.ok()) return Fail(client.status());

  paged::client::GenerateOptions request;
  request.prompt = argc > 2 ? argv[2] : "Once upon a time";
  request.max_tokens = argc > 3 ? std::atoi(argv[3]) : 64;
  request.temperature = 0;  // greedy: the same prompt gives the same text

  absl::StatusOr<paged::client::GenerateResult> result =
      client->Generate(request, [](const paged::client::TokenChunk& chunk) {
        std::fputs(chunk.text.c_str(), stdout);  // each piece as soon as it arrives
        std::fflush(stdout);
      });
  if (!result.ok()) return Fail(result.status());

  std::printf("\n");
  std::fprintf(stderr, "%d tokens, finish: %s, %.2f s\n", result->usage.generated_tokens,
               paged::client::FinishReasonName(result->finish_reason), result->usage.total_s);
  return 0;
}
