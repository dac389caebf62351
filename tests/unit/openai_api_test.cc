// The OpenAI API's request mapping and validation (daemon/http/openai_api.h)
// as a table, and the exact response bodies, chunks and errors.
#include "daemon/http/openai_api.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace paged::http {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

constexpr char kModel[] = "stories260K";

ApiRequest MustParse(Endpoint e, const std::string& body) {
  ApiRequest r;
  ApiError err;
  EXPECT_TRUE(ParseApiRequest(e, body, kModel, &r, &err)) << body << ": " << err.message;
  return r;
}

TEST(OpenAiApiTest, CompletionDefaultsFollowOpenAi) {
  const ApiRequest r =
      MustParse(Endpoint::kCompletions, R"({"model":"stories260K","prompt":"Hi"})");
  EXPECT_EQ(r.generate.text(), "Hi");
  EXPECT_EQ(r.generate.max_tokens(), 16);
  EXPECT_FALSE(r.fill_max_tokens);
  EXPECT_FLOAT_EQ(r.generate.sampling().temperature(), 1.0f);
  EXPECT_FLOAT_EQ(r.generate.sampling().top_p(), 1.0f);
  EXPECT_EQ(r.generate.sampling().top_k(), 0);
  EXPECT_EQ(r.generate.sampling().seed(), 0u);
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.include_usage);
  EXPECT_FALSE(r.generate.ignore_eos());
}

TEST(OpenAiApiTest, CompletionFieldsMapToTheGenerateRequest) {
  const ApiRequest r = MustParse(Endpoint::kCompletions, R"({
      "prompt": [1, 403], "max_tokens": 200, "temperature": 0, "top_p": 0.5, "top_k": 40,
      "seed": 42, "stop": ["Lily", "."], "stream": true,
      "stream_options": {"include_usage": true}, "user": "alice", "n": 1, "best_of": 1,
      "echo": false, "logprobs": null, "suffix": null, "presence_penalty": 0,
      "frequency_penalty": 0.0, "logit_bias": {}, "ignore_eos": true,
      "stop_token_ids": [2], "unknown_field": {"ignored": true}})");
  ASSERT_TRUE(r.generate.has_tokens());
  EXPECT_THAT(r.generate.tokens().ids(), ::testing::ElementsAre(1, 403));
  EXPECT_EQ(r.generate.max_tokens(), 200);
  EXPECT_FLOAT_EQ(r.generate.sampling().temperature(), 0.f);
  EXPECT_FLOAT_EQ(r.generate.sampling().top_p(), 0.5f);
  EXPECT_EQ(r.generate.sampling().top_k(), 40);
  EXPECT_EQ(r.generate.sampling().seed(), 42u);
  EXPECT_THAT(r.generate.stop_strings(), ::testing::ElementsAre("Lily", "."));
  EXPECT_THAT(r.generate.stop_token_ids(), ::testing::ElementsAre(2));
  EXPECT_TRUE(r.generate.ignore_eos());
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
}

TEST(OpenAiApiTest, PromptForms) {
  EXPECT_EQ(MustParse(Endpoint::kCompletions, R"({"prompt":["one"]})").generate.text(), "one");
  EXPECT_THAT(MustParse(Endpoint::kCompletions, R"({"prompt":[[5,6]]})").generate.tokens().ids(),
              ::testing::ElementsAre(5, 6));
  EXPECT_EQ(
      MustParse(Endpoint::kCompletions, R"({"prompt":"x","stop":"\n"})").generate.stop_strings(0),
      "\n");
  // A missing or empty model is the served one.
  MustParse(Endpoint::kCompletions, R"({"prompt":"x","model":""})");
  EXPECT_EQ(
      MustParse(Endpoint::kCompletions, R"({"prompt":"x","seed":-1})").generate.sampling().seed(),
      ~uint64_t(0));
  EXPECT_EQ(
      MustParse(Endpoint::kCompletions, R"({"prompt":"x","top_k":-1})").generate.sampling().top_k(),
      0);
}

TEST(OpenAiApiTest, ChatMessagesMapToTheChatPrompt) {
  const ApiRequest r = MustParse(Endpoint::kChatCompletions, R"({
      "model": "stories260K",
      "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hello"},
                                     {"type": "text", "text": "there"}], "name": "bob"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "Tell a story."}],
      "max_completion_tokens": 30, "logprobs": false, "tool_choice": "none", "tools": [],
      "response_format": {"type": "text"}})");
  ASSERT_TRUE(r.generate.has_chat());
  const v1::ChatMessages& chat = r.generate.chat();
  EXPECT_TRUE(chat.add_generation_prompt());
  ASSERT_EQ(chat.messages_size(), 4);
  EXPECT_EQ(chat.messages(0).role(), "system");
  EXPECT_EQ(chat.messages(0).content(), "Be brief.");
  EXPECT_EQ(chat.messages(1).role(), "user");
  EXPECT_EQ(chat.messages(1).content(), "Hello\nthere");
  EXPECT_EQ(chat.messages(2).role(), "assistant");
  EXPECT_EQ(chat.messages(3).content(), "Tell a story.");
  EXPECT_EQ(r.generate.max_tokens(), 30);
  EXPECT_FALSE(r.fill_max_tokens);
  // Without a length: as many as fit.
  const ApiRequest d =
      MustParse(Endpoint::kChatCompletions, R"({"messages":[{"role":"user","content":"x"}]})");
  EXPECT_TRUE(d.fill_max_tokens);
  EXPECT_EQ(d.generate.max_tokens(), 0);
  EXPECT_EQ(MustParse(Endpoint::kChatCompletions,
                      R"({"messages":[{"role":"user","content":"x"}],"max_tokens":7})")
                .generate.max_tokens(),
            7);
}

struct BadCase {
  Endpoint endpoint;
  std::string body;
  int status;
  std::string param;    // "" : null
  std::string message;  // a part of it
};

TEST(OpenAiApiTest, BadRequestsAreRefusedWithTheirFieldAndStatus) {
  const Endpoint C = Endpoint::kCompletions, H = Endpoint::kChatCompletions;
  const std::string user = R"("messages":[{"role":"user","content":"x"}])";
  const std::vector<BadCase> cases = {
      {C, "", 400, "", "not valid JSON"},
      {C, "{", 400, "", "not valid JSON"},
      {C, "[1]", 400, "", "JSON object"},
      {C, std::string(100, '[') + std::string(100, ']'), 400, "", "nests deeper"},
      {C, R"({"model":"gpt-4","prompt":"x"})", 404, "model", "does not exist"},
      {C, R"({"model":5,"prompt":"x"})", 400, "model", "string"},
      {C, R"({})", 400, "prompt", "required"},
      {C, R"({"prompt":5})", 400, "prompt", "must be"},
      {C, R"({"prompt":[]})", 400, "prompt", "must be"},
      {C, R"({"prompt":["a","b"]})", 400, "prompt", "several prompts"},
      {C, R"({"prompt":[[1],[2]]})", 400, "prompt", "several prompts"},
      {C, R"({"prompt":[1,"a"]})", 400, "prompt", "32-bit integers"},
      {C, R"({"prompt":[1,5000000000]})", 400, "prompt", "32-bit integers"},
      {C, R"({"prompt":[true]})", 400, "prompt", "must be"},
      {C, R"({"prompt":"x","max_tokens":0})", 400, "max_tokens", "integer"},
      {C, R"({"prompt":"x","max_tokens":1.5})", 400, "max_tokens", "integer"},
      {C, R"({"prompt":"x","max_tokens":"9"})", 400, "max_tokens", "integer"},
      {C, R"({"prompt":"x","temperature":-1})", 400, "temperature", ">= 0"},
      {C, R"({"prompt":"x","temperature":"hot"})", 400, "temperature", "number"},
      {C, R"({"prompt":"x","top_p":0})", 400, "top_p", "(0, 1]"},
      {C, R"({"prompt":"x","top_p":1.5})", 400, "top_p", "(0, 1]"},
      {C, R"({"prompt":"x","top_k":-2})", 400, "top_k", "integer"},
      {C, R"({"prompt":"x","seed":1.5})", 400, "seed", "integer"},
      {C, R"({"prompt":"x","stop":5})", 400, "stop", "string"},
      {C, R"({"prompt":"x","stop":["a",1]})", 400, "stop", "string"},
      {C, R"({"prompt":"x","stop_token_ids":"2"})", 400, "stop_token_ids", "token ids"},
      {C, R"({"prompt":"x","ignore_eos":1})", 400, "ignore_eos", "boolean"},
      {C, R"({"prompt":"x","stream":"yes"})", 400, "stream", "boolean"},
      {C, R"({"prompt":"x","stream_options":{"include_usage":true}})", 400, "stream_options",
       "only allowed"},
      {C, R"({"prompt":"x","stream":true,"stream_options":5})", 400, "stream_options", "must be"},
      {C, R"({"prompt":"x","n":2})", 400, "n", "not supported"},
      {C, R"({"prompt":"x","best_of":3})", 400, "best_of", "not supported"},
      {C, R"({"prompt":"x","echo":true})", 400, "echo", "not supported"},
      {C, R"({"prompt":"x","logprobs":5})", 400, "logprobs", "not supported"},
      {C, R"({"prompt":"x","suffix":"end"})", 400, "suffix", "not supported"},
      {C, R"({"prompt":"x","presence_penalty":0.5})", 400, "presence_penalty", "not supported"},
      {C, R"({"prompt":"x","frequency_penalty":1})", 400, "frequency_penalty", "not supported"},
      {C, R"({"prompt":"x","logit_bias":{"5":100}})", 400, "logit_bias", "not supported"},
      {H, R"({"prompt":"x"})", 400, "messages", "non-empty list"},
      {H, R"({"messages":[]})", 400, "messages", "non-empty list"},
      {H, R"({"messages":["hi"]})", 400, "messages[0]", "object"},
      {H, R"({"messages":[{"content":"x"}]})", 400, "messages[0].role", "required"},
      {H, R"({"messages":[{"role":"tool","content":"x"}]})", 400, "messages[0].role",
       "only system, user and assistant"},
      {H, R"({"messages":[{"role":"user"}]})", 400, "messages[0].content", "required"},
      {H, R"({"messages":[{"role":"user","content":null}]})", 400, "messages[0].content",
       "required"},
      {H, R"({"messages":[{"role":"user","content":5}]})", 400, "messages[0].content",
       "string or a list"},
      {H,
       R"({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]})",
       400, "messages[0].content[0]", "only {\"type\": \"text\""},
      {H, "{" + user + R"(,"max_completion_tokens":0})", 400, "max_completion_tokens", "integer"},
      {H, "{" + user + R"(,"logprobs":true})", 400, "logprobs", "not supported"},
      {H, "{" + user + R"(,"top_logprobs":3})", 400, "top_logprobs", "not supported"},
      {H, "{" + user + R"(,"tools":[{"type":"function"}]})", 400, "tools", "not supported"},
      {H, "{" + user + R"(,"tool_choice":"auto"})", 400, "tool_choice", "not supported"},
      {H, "{" + user + R"(,"response_format":{"type":"json_object"}})", 400, "response_format",
       "not supported"},
      {H, "{" + user + R"(,"response_format":{"type":5}})", 400, "response_format",
       "not supported"},
  };
  for (const BadCase& c : cases) {
    ApiRequest r;
    ApiError e;
    EXPECT_FALSE(ParseApiRequest(c.endpoint, c.body, kModel, &r, &e)) << c.body;
    EXPECT_EQ(e.status, c.status) << c.body;
    EXPECT_EQ(e.param, c.param) << c.body;
    EXPECT_THAT(e.message, HasSubstr(c.message)) << c.body;
    EXPECT_EQ(e.type, "invalid_request_error") << c.body;
  }
}

TEST(OpenAiApiTest, StatusesMapToHttp) {
  struct Row {
    absl::Status s;
    int status;
    std::string type;
  };
  const std::vector<Row> rows = {
      {absl::InvalidArgumentError("x"), 400, "invalid_request_error"},
      {absl::FailedPreconditionError("the model has no chat template"), 400,
       "invalid_request_error"},
      {absl::UnauthenticatedError("x"), 401, "invalid_request_error"},
      {absl::NotFoundError("x"), 404, "invalid_request_error"},
      {absl::ResourceExhaustedError("queue full"), 429, "rate_limit_error"},
      {absl::UnimplementedError("x"), 501, "not_implemented_error"},
      {absl::UnavailableError("x"), 503, "server_error"},
      {absl::DeadlineExceededError("x"), 504, "server_error"},
      {absl::AbortedError("x"), 500, "server_error"},
      {absl::InternalError("x"), 500, "server_error"},
  };
  for (const Row& r : rows) {
    const ApiError e = ErrorFromStatus(r.s);
    EXPECT_EQ(e.status, r.status) << r.s;
    EXPECT_EQ(e.type, r.type) << r.s;
    EXPECT_EQ(e.message, std::string(r.s.message()));
  }
  EXPECT_EQ(ErrorFromStatus(absl::UnauthenticatedError("x")).code, "invalid_api_key");
}

ResponseInfo Info(Endpoint e) { return {e, "cmpl-1", 1700000000, kModel}; }

TEST(OpenAiApiTest, BodiesAreOpenAiShaped) {
  EXPECT_EQ(
      Dump(CompletionBody(Info(Endpoint::kCompletions), "Once", "length", {1, 16})),
      R"({"choices":[{"finish_reason":"length","index":0,"logprobs":null,"text":"Once"}],)"
      R"("created":1700000000,"id":"cmpl-1","model":"stories260K","object":"text_completion",)"
      R"("usage":{"completion_tokens":16,"prompt_tokens":1,"total_tokens":17}})");
  EXPECT_EQ(Dump(CompletionBody(Info(Endpoint::kChatCompletions), "Hi", "stop", {5, 2})),
            R"({"choices":[{"finish_reason":"stop","index":0,"logprobs":null,)"
            R"("message":{"content":"Hi","role":"assistant"}}],"created":1700000000,"id":"cmpl-1",)"
            R"("model":"stories260K","object":"chat.completion",)"
            R"("usage":{"completion_tokens":2,"prompt_tokens":5,"total_tokens":7}})");
  EXPECT_EQ(SseEvent(ChunkBody(Info(Endpoint::kCompletions), " upon", false, "", false)),
            "data: "
            R"({"choices":[{"finish_reason":null,"index":0,"logprobs":null,"text":" upon"}],)"
            R"("created":1700000000,"id":"cmpl-1","model":"stories260K",)"
            R"("object":"text_completion"})"
            "\n\n");
  const json role = ChunkBody(Info(Endpoint::kChatCompletions), "", true, "", true);
  EXPECT_EQ(role["object"], "chat.completion.chunk");
  EXPECT_EQ(role["choices"][0]["delta"], json({{"role", "assistant"}, {"content", ""}}));
  EXPECT_TRUE(role["usage"].is_null());
  EXPECT_TRUE(role.contains("usage"));
  const json last = ChunkBody(Info(Endpoint::kChatCompletions), "", false, "stop", false);
  EXPECT_EQ(last["choices"][0]["delta"], json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_FALSE(last.contains("usage"));
  const json usage = UsageChunkBody(Info(Endpoint::kChatCompletions), {3, 4});
  EXPECT_EQ(usage["choices"], json::array());
  EXPECT_EQ(usage["usage"]["total_tokens"], 7);
  EXPECT_EQ(Dump(ModelsBody(kModel, 5)),
            R"({"data":[{"created":5,"id":"stories260K","object":"model","owned_by":"paged"}],)"
            R"("object":"list"})");
  ApiError e;
  e.status = 404;
  e.message = "nope";
  e.param = "model";
  e.code = "model_not_found";
  EXPECT_EQ(Dump(ErrorBody(e)),
            R"({"error":{"code":"model_not_found","message":"nope","param":"model",)"
            R"("type":"invalid_request_error"}})");
  e.param = e.code = "";
  EXPECT_EQ(
      Dump(ErrorBody(e)),
      R"({"error":{"code":null,"message":"nope","param":null,"type":"invalid_request_error"}})");
  // Invalid UTF-8 never breaks a body.
  EXPECT_EQ(Dump(json("a\xff")), "\"a\xef\xbf\xbd\"");
}

TEST(OpenAiApiTest, FinishReasonsAndIds) {
  EXPECT_EQ(OpenAiFinishReason(FinishReason::kEos), "stop");
  EXPECT_EQ(OpenAiFinishReason(FinishReason::kStop), "stop");
  EXPECT_EQ(OpenAiFinishReason(FinishReason::kLength), "length");
  EXPECT_EQ(OpenAiFinishReason(FinishReason::kCancelled), "abort");
  EXPECT_EQ(OpenAiFinishReason(FinishReason::kError), "");
  const std::string a = NewResponseId("cmpl-"), b = NewResponseId("cmpl-");
  EXPECT_EQ(a.size(), 5u + 24u);
  EXPECT_NE(a, b);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef", 5), std::string::npos);
}

}  // namespace
}  // namespace paged::http
