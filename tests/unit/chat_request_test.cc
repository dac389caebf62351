// Chat prompts in paged.v1.GenerateRequest: ParseGenerateRequest renders
// them with the chat template and tokenizes the text with specials parsed
// (a fake tokenizer, and stories260K's SentencePiece vocabulary with the
// llama2 format named by the operator); the coordinator's template from the
// checkpoint or the --chat-template override, and what it answers without one.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "daemon/chat_template.h"
#include "daemon/coordinator.h"
#include "daemon/generate_request.h"
#include "store/gguf_model.h"
#include "tests/unit/test_util.h"
#include "tokenizer/sp_tokenizer.h"

namespace paged {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Specials "<s>" 1, "</s>" 2 (EOS), "<|im_start|>" 10, "<|im_end|>" 11 (when
// `chatml`); every other byte b is 100 + b. Parses specials only when asked.
class FakeTokenizer final : public Tokenizer {
 public:
  explicit FakeTokenizer(bool chatml = true) {
    specials_ = {{"<s>", 1}, {"</s>", 2}};
    if (chatml) specials_.insert({{"<|im_start|>", 10}, {"<|im_end|>", 11}});
  }
  std::vector<int32_t> Encode(std::string_view text, bool add_bos,
                              bool parse_special) const override {
    std::vector<int32_t> ids;
    if (add_bos) ids.push_back(1);
    size_t i = 0;
    while (i < text.size()) {
      bool matched = false;
      if (parse_special) {
        for (const auto& [piece, id] : specials_) {
          if (text.substr(i, piece.size()) == piece) {
            ids.push_back(id);
            i += piece.size();
            matched = true;
            break;
          }
        }
      }
      if (!matched) ids.push_back(100 + int32_t(static_cast<unsigned char>(text[i++])));
    }
    return ids;
  }
  std::string DecodePiece(int32_t, int32_t token) const override {
    return token >= 100 ? std::string(1, char(token - 100)) : "";
  }
  std::string Decode(std::span<const int32_t> ids) const override {
    std::string s;
    for (int32_t id : ids) s += DecodePiece(kStartOfSequence, id);
    return s;
  }
  std::string IdToPiece(int32_t id) const override {
    for (const auto& [piece, i] : specials_)
      if (i == id) return piece;
    return DecodePiece(kStartOfSequence, id);
  }
  int32_t PieceToId(std::string_view piece) const override {
    auto it = specials_.find(std::string(piece));
    return it == specials_.end() ? -1 : it->second;
  }
  bool IsEos(int32_t token) const override { return token == 2; }
  bool IsControl(int32_t token) const override { return token < 100; }
  int32_t bos_id() const override { return 1; }
  int32_t eos_id() const override { return 2; }
  size_t vocab_size() const override { return 356; }

 private:
  std::map<std::string, int32_t> specials_;
};

v1::GenerateRequest ChatRequest(std::vector<std::pair<std::string, std::string>> messages,
                                bool add_generation_prompt = true) {
  v1::GenerateRequest r;
  for (auto& [role, content] : messages) {
    v1::ChatMessage* m = r.mutable_chat()->add_messages();
    m->set_role(role);
    m->set_content(content);
  }
  r.mutable_chat()->set_add_generation_prompt(add_generation_prompt);
  r.set_max_tokens(8);
  return r;
}

TEST(ChatRequestTest, RendersThenEncodesWithSpecialsAndNoAddedBos) {
  const FakeTokenizer tok;
  const ChatTemplate chatml = *ChatTemplate::FromName("chatml");
  PromptContext ctx{&tok, &chatml};
  auto p = ParseGenerateRequest(ChatRequest({{"user", "hi"}}), ctx, 7);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->request.prompt,
            tok.Encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", false, true));
  EXPECT_EQ(p->request.prompt.front(), 10);  // <|im_start|>, no BOS
  // The end of turn stops the reply.
  EXPECT_THAT(p->request.stop_ids, ElementsAre(11));
  EXPECT_TRUE(p->stop_strings.empty());
  // Not twice when the client asked for it too.
  v1::GenerateRequest r = ChatRequest({{"user", "hi"}});
  r.add_stop_token_ids(11);
  r.add_stop_token_ids(5);
  p = ParseGenerateRequest(r, ctx, 7);
  ASSERT_TRUE(p.ok());
  EXPECT_THAT(p->request.stop_ids, ElementsAre(11, 5));
  // add_generation_prompt off.
  p = ParseGenerateRequest(ChatRequest({{"user", "hi"}}, false), ctx, 7);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->request.prompt, tok.Encode("<|im_start|>user\nhi<|im_end|>\n", false, true));
}

TEST(ChatRequestTest, EndOfTurnThatIsEosOrNotAPiece) {
  const ChatTemplate llama2 = *ChatTemplate::FromName("llama2");
  const FakeTokenizer tok;
  auto p = ParseGenerateRequest(ChatRequest({{"user", "hi"}}), PromptContext{&tok, &llama2}, 7);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->request.prompt, tok.Encode("<s>[INST] hi [/INST]", false, true));
  EXPECT_EQ(p->request.prompt.front(), 1);  // the template's BOS, once
  EXPECT_EQ(std::count(p->request.prompt.begin(), p->request.prompt.end(), 1), 1);
  EXPECT_TRUE(p->request.stop_ids.empty());  // </s> is EOS: it stops anyway
  // A vocabulary without <|im_end|>: the reply stops at its text.
  const FakeTokenizer plain(/*chatml=*/false);
  const ChatTemplate chatml = *ChatTemplate::FromName("chatml");
  p = ParseGenerateRequest(ChatRequest({{"user", "hi"}}), PromptContext{&plain, &chatml}, 7);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->request.stop_ids.empty());
  EXPECT_THAT(p->stop_strings, ElementsAre("<|im_end|>"));
}

TEST(ChatRequestTest, Refusals) {
  const FakeTokenizer tok;
  const ChatTemplate llama2 = *ChatTemplate::FromName("llama2");
  const PromptContext good{&tok, &llama2};
  // No template.
  auto s = ParseGenerateRequest(ChatRequest({{"user", "hi"}}), PromptContext{&tok}, 7).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(),
              HasSubstr("the model has no chat template; start paged with --chat-template NAME"));
  // An unsupported template: its error.
  PromptContext unsupported{&tok};
  unsupported.no_chat = ChatTemplate::FromSource("{% include 'chat.jinja' %}").status();
  s = ParseGenerateRequest(ChatRequest({{"user", "hi"}}), unsupported, 7).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("unsupported chat template"));
  // No tokenizer.
  s = ParseGenerateRequest(ChatRequest({{"user", "hi"}}), PromptContext{nullptr, &llama2}, 7)
          .status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("no tokenizer"));
  // Malformed conversations.
  v1::GenerateRequest empty;
  empty.mutable_chat();
  EXPECT_THAT(ParseGenerateRequest(empty, good, 7).status().message(), HasSubstr("no messages"));
  EXPECT_THAT(ParseGenerateRequest(ChatRequest({{"robot", "hi"}}), good, 7).status().message(),
              HasSubstr("role 'robot'"));
  EXPECT_THAT(
      ParseGenerateRequest(ChatRequest({{"user", "a"}, {"user", "b"}}), good, 7).status().message(),
      HasSubstr("alternate"));
  std::vector<std::pair<std::string, std::string>> many(kMaxChatMessages + 1, {"user", "x"});
  s = ParseGenerateRequest(ChatRequest(many), good, 7).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("at most 1024"));
  s = ParseGenerateRequest(
          ChatRequest({{"user", std::string(kMaxPromptTextBytes / 2 + 1, 'a')},
                       {"assistant", std::string(kMaxPromptTextBytes / 2 + 1, 'b')}}),
          good, 7)
          .status();
  EXPECT_THAT(s.message(), HasSubstr("over the limit"));
  // Malformed requests are INVALID_ARGUMENT before the missing template.
  EXPECT_EQ(ParseGenerateRequest(empty, PromptContext{}, 7).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// stories260K has a SentencePiece vocabulary (<s> = 1 is a control token)
// and no chat template: with the llama2 format named, a chat prompt renders
// and tokenizes, BOS written by the template becoming id 1.
TEST(ChatRequestTest, Stories260KWithTheLlama2Format) {
  const std::string path = testing::Stories260KPath();
  PAGED_REQUIRE_FIXTURE(path, "../shared/models/stories260K.gguf");
  auto src = OpenGgufModel(path);
  ASSERT_TRUE(src.ok()) << src.status();
  auto tok = SpTokenizer::Create((*src)->vocab);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const ChatTemplate llama2 = *ChatTemplate::FromName("llama2");
  const PromptContext ctx{&*tok, &llama2};
  const v1::GenerateRequest req = ChatRequest({{"system", "Tell a story."},
                                               {"user", "Once upon a time"},
                                               {"assistant", "there was a cat."},
                                               {"user", "What next?"}});
  auto p = ParseGenerateRequest(req, ctx, 7);
  ASSERT_TRUE(p.ok()) << p.status();
  const std::string text =
      "<s>[INST] <<SYS>>\nTell a story.\n<</SYS>>\n\nOnce upon a time [/INST] there was a cat. "
      "</s><s>[INST] What next? [/INST]";
  const std::vector<ChatTurn> turns = {{"system", "Tell a story."},
                                       {"user", "Once upon a time"},
                                       {"assistant", "there was a cat."},
                                       {"user", "What next?"}};
  ASSERT_EQ(*llama2.Render(turns, true), text);
  EXPECT_EQ(p->request.prompt, tok->Encode(text, /*add_bos=*/false, /*parse_special=*/true));
  // "<s>" twice and "</s>" once as their ids, BOS first and only once there.
  EXPECT_EQ(p->request.prompt[0], tok->bos_id());
  EXPECT_NE(p->request.prompt[1], tok->bos_id());
  EXPECT_EQ(std::count(p->request.prompt.begin(), p->request.prompt.end(), tok->bos_id()), 2);
  EXPECT_EQ(std::count(p->request.prompt.begin(), p->request.prompt.end(), tok->eos_id()), 1);
  EXPECT_TRUE(p->request.stop_ids.empty());  // </s> is the EOS
}

// ---- the coordinator's template ----

CoordinatorOptions Options(std::string chat_template, std::string chat_format) {
  CoordinatorOptions o;
  o.model_name = "fake";
  o.model.n_layers = 1;
  o.model.hidden = 8;
  o.model.ffn = 16;
  o.model.n_heads = 2;
  o.model.n_kv_heads = 2;
  o.model.head_dim = 4;
  o.model.vocab = 64;
  o.model.max_context = 128;
  o.scheduler = SchedulerConfigForModel(o.model);
  o.scheduler.block_tokens = 4;
  o.scheduler.total_blocks = 16;
  o.chat_template = std::move(chat_template);
  o.chat_format = std::move(chat_format);
  return o;
}

TEST(CoordinatorChatTest, TemplateFromTheCheckpointOrTheOverride) {
  const std::string llama3 =
      "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] }}{% endfor %}";
  struct Case {
    std::string source, format, want;  // want "": chat refused
    absl::StatusCode refusal = absl::StatusCode::kOk;
  };
  const Case cases[] = {
      {llama3, "", "llama3"},
      {llama3, "chatml", "chatml"},
      {"", "mistral", "mistral"},
      {"", "", "", absl::StatusCode::kFailedPrecondition},
      {"{{ unknown }}", "", "", absl::StatusCode::kInvalidArgument},  // still serves
      {"{{ unknown }}", "llama2", "llama2"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.source + " / " + c.format);
    auto coord = Coordinator::Create(Options(c.source, c.format), {});
    ASSERT_TRUE(coord.ok()) << coord.status();
    const v1::ListModelsResponse models = (*coord)->ListModels();
    ASSERT_EQ(models.models_size(), 1);
    EXPECT_EQ(models.models(0).chat_template(), c.want);
    if (c.want.empty()) {
      EXPECT_EQ((*coord)->chat_template(), nullptr);
      // A chat request gets why (before the missing tokenizer).
      absl::Status s = (*coord)->ParseRequest(ChatRequest({{"user", "hi"}})).status();
      EXPECT_EQ(s.code(), c.refusal);
    } else {
      ASSERT_NE((*coord)->chat_template(), nullptr);
      EXPECT_EQ((*coord)->chat_template()->name(), c.want);
    }
    // Plain prompts are served either way.
    v1::GenerateRequest tokens;
    tokens.mutable_tokens()->add_ids(1);
    tokens.set_max_tokens(1);
    EXPECT_TRUE((*coord)->ParseRequest(tokens).ok());
  }
}

TEST(CoordinatorChatTest, AnUnknownOverrideStopsTheStart) {
  auto coord = Coordinator::Create(Options("", "vicuna"), {});
  ASSERT_FALSE(coord.ok());
  EXPECT_EQ(coord.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(coord.status().message(),
              HasSubstr("--chat-template: unknown chat template 'vicuna'"));
}

}  // namespace
}  // namespace paged
