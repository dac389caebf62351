// ChatTemplate: the upstream templates executed (and recognised by their
// markers), the hand-written formats by name, and the fallback to those when
// the engine cannot run a template.
//
// The fixtures are the "chat_template" values of the models'
// tokenizer_config.json, written here from memory as JSON string literals
// (decoded with nlohmann::json, so "\n" is a newline in the Jinja source and
// "\\n" a Jinja "\n" escape, as in the files). Details that may differ from
// the published files: the whitespace of the long multi-line templates
// (Qwen2.5, Llama 3.1, Mistral v0.3). The published templates themselves are
// checked byte for byte against transformers in chat_template_golden_test.cc.
#include "daemon/chat_template.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace paged {
namespace {

using ::testing::HasSubstr;

std::string Decode(const char* json_string) {
  return nlohmann::json::parse(json_string).get<std::string>();
}

// Qwen/Qwen2-7B-Instruct
const char kQwen2[] =
    R"j("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")j";

// Qwen/Qwen2.5-7B-Instruct
const char kQwen25[] =
    R"j("{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- messages[0]['content'] }}\n    {%- else %}\n        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\" and not message.tool_calls) %}\n        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n            {{- tool_call.name }}\n            {{- '\", \"arguments\": ' }}\n            {{- tool_call.arguments | tojson }}\n            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n    {%- elif message.role == \"tool\" %}\n        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n")j";

// HuggingFaceTB/SmolLM-1.7B-Instruct: ChatML with no default system prompt.
const char kSmolLM[] =
    R"j("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")j";

// HuggingFaceTB/SmolLM2-1.7B-Instruct
const char kSmolLM2[] =
    R"j("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")j";

// meta-llama/Llama-2-7b-chat-hf
const char kLlama2[] =
    R"j("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")j";

// meta-llama/Meta-Llama-3-8B-Instruct
const char kLlama3[] =
    R"j("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")j";

// meta-llama/Llama-3.1-8B-Instruct (the tool-calling branches shortened to
// their first lines: they do not render for plain messages).
const char kLlama31[] =
    R"j("{{- bos_token }}\n{%- if custom_tools is defined %}\n    {%- set tools = custom_tools %}\n{%- endif %}\n{%- if not tools_in_user_message is defined %}\n    {%- set tools_in_user_message = true %}\n{%- endif %}\n{%- if not date_string is defined %}\n    {%- set date_string = \"26 Jul 2024\" %}\n{%- endif %}\n{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n\n{#- This block extracts the system message, so we can slot it into the right place. #}\n{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content']|trim %}\n    {%- set messages = messages[1:] %}\n{%- else %}\n    {%- set system_message = \"\" %}\n{%- endif %}\n\n{#- System message + builtin tools #}\n{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n{%- if builtin_tools is defined or tools is not none %}\n    {{- \"Environment: ipython\\n\" }}\n{%- endif %}\n{%- if builtin_tools is defined %}\n    {{- \"Tools: \" + builtin_tools | reject('equalto', 'code_interpreter') | join(\", \") + \"\\n\\n\"}}\n{%- endif %}\n{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n{%- if tools is not none and not tools_in_user_message %}\n    {{- \"You have access to the following functions. To call a function, please respond with JSON for a function call.\" }}\n{%- endif %}\n{{- system_message }}\n{{- \"<|eot_id|>\" }}\n\n{%- for message in messages %}\n    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}\n        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n    {%- elif 'tool_calls' in message %}\n        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n")j";

// mistralai/Mistral-7B-Instruct-v0.1 (the original template: no system role).
const char kMistralV01[] =
    R"j("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")j";

// mistralai/Mistral-7B-Instruct-v0.3 (tool branches shortened).
const char kMistralV03[] =
    R"j("{%- if messages[0][\"role\"] == \"system\" %}\n    {%- set system_message = messages[0][\"content\"] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n{%- set user_messages = loop_messages | selectattr(\"role\", \"equalto\", \"user\") | list %}\n\n{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}\n{%- set ns = namespace() %}\n{%- set ns.index = 0 %}\n{%- for message in loop_messages %}\n    {%- if not (message.role == \"tool\" or message.role == \"tool_results\" or (message.tool_calls is defined and message.tool_calls is not none)) %}\n        {%- if (message[\"role\"] == \"user\") != (ns.index % 2 == 0) %}\n            {{- raise_exception(\"After the optional system message, conversation roles must alternate user/assistant/user/assistant/...\") }}\n        {%- endif %}\n        {%- set ns.index = ns.index + 1 %}\n    {%- endif %}\n{%- endfor %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if message[\"role\"] == \"user\" %}\n        {%- if tools is not none and (message == user_messages[-1]) %}\n            {{- \"[AVAILABLE_TOOLS] [\" }}\n        {%- endif %}\n        {%- if loop.last and system_message is defined %}\n            {{- \"[INST] \" + system_message + \"\\n\\n\" + message[\"content\"] + \"[/INST]\" }}\n        {%- else %}\n            {{- \"[INST] \" + message[\"content\"] + \"[/INST]\" }}\n        {%- endif %}\n    {%- elif message[\"role\"] == \"assistant\" %}\n        {{- \" \" + message[\"content\"]|trim + eos_token}}\n    {%- else %}\n        {{- raise_exception(\"Only user and assistant roles are supported, with the exception of an initial optional system message!\") }}\n    {%- endif %}\n{%- endfor %}\n")j";

// google/gemma-2-9b-it
const char kGemma[] =
    R"j("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")j";

// microsoft/Phi-3-mini-4k-instruct: executed; no marker names a format.
const char kPhi3[] =
    R"j("{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}")j";

// A template the engine cannot run ({% call %} is outside the subset) and no
// marker names.
const char kUnsupported[] =
    "{% for message in messages %}{% call render(message) %}{{ message['content'] }}{% endcall "
    "%}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}";

// The tokenizer's special tokens a template gets (bos_token, eos_token).
ChatTemplateOptions Tokens(const char* bos, const char* eos) {
  ChatTemplateOptions o;
  o.bos_token = bos;
  o.eos_token = eos;
  return o;
}

ChatTemplate FromFixture(const char* json, const ChatTemplateOptions& tokens = {}) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::FromSource(Decode(json), tokens);
  EXPECT_TRUE(t.ok()) << t.status();
  if (t.ok()) {
    EXPECT_TRUE(t->executed()) << t->fallback_reason();
  }
  return t.ok() ? *t : *ChatTemplate::FromName("chatml");
}

ChatTemplate Named(const char* name) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::FromName(name);
  EXPECT_TRUE(t.ok()) << t.status();
  return *t;
}

std::string Render(const ChatTemplate& t, const std::vector<ChatTurn>& turns, bool gen) {
  absl::StatusOr<std::string> s = t.Render(turns, gen);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : "<error: " + std::string(s.status().message()) + ">";
}

absl::Status RenderStatus(const ChatTemplate& t, const std::vector<ChatTurn>& turns) {
  return t.Render(turns, true).status();
}

// system, user, assistant, user
const std::vector<ChatTurn> kWithSystem = {{"system", "You are terse."},
                                           {"user", "Hi"},
                                           {"assistant", "Hello!"},
                                           {"user", "How are you?"}};
const std::vector<ChatTurn> kNoSystem = {
    {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "How are you?"}};

TEST(ChatTemplateTest, RecognisesEachUpstreamTemplate) {
  struct Case {
    const char* what;
    const char* json;
    const char* name;
    const char* default_system;
  };
  const Case cases[] = {
      {"Qwen2", kQwen2, "chatml", "You are a helpful assistant."},
      {"Qwen2.5", kQwen25, "chatml",
       "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."},
      {"SmolLM", kSmolLM, "chatml", ""},
      {"SmolLM2", kSmolLM2, "chatml",
       "You are a helpful AI assistant named SmolLM, trained by Hugging Face"},
      {"Llama 2", kLlama2, "llama2", ""},
      {"Llama 3", kLlama3, "llama3", ""},
      {"Llama 3.1", kLlama31, "llama3", ""},
      {"Mistral v0.1", kMistralV01, "mistral", ""},
      {"Mistral v0.3", kMistralV03, "mistral", ""},
      {"Gemma 2", kGemma, "gemma", ""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    // (With BOS and EOS tokens: Llama's templates add bos_token to text, an
    // error while it is undefined, as under transformers.)
    absl::StatusOr<ChatTemplate> t =
        ChatTemplate::FromSource(Decode(c.json), Tokens("<s>", "</s>"));
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_TRUE(t->executed()) << t->fallback_reason();
    EXPECT_EQ(t->name(), c.name);
    EXPECT_EQ(t->default_system(), c.default_system);
  }
}

TEST(ChatTemplateTest, UnsupportedAndEmptyTemplates) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::FromSource(kUnsupported);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("unsupported chat template: \"{% for message"));
  EXPECT_THAT(t.status().message(),
              HasSubstr("it does not run: line 1: the 'call' tag is not supported"));
  EXPECT_THAT(t.status().message(), HasSubstr("supported: chatml, llama2, llama3, mistral"));
  EXPECT_THAT(t.status().message(), HasSubstr("--chat-template"));
  // A long source is quoted in part, on one line.
  EXPECT_THAT(t.status().message(), HasSubstr("...\""));
  EXPECT_EQ(std::string(t.status().message()).find('\n'), std::string::npos);

  EXPECT_THAT(ChatTemplate::FromSource("").status().message(), HasSubstr("empty"));
  EXPECT_THAT(ChatTemplate::FromSource(" \n").status().message(),
              HasSubstr("unsupported chat template"));
  EXPECT_THAT(ChatTemplate::FromName("vicuna").status().message(),
              HasSubstr("unknown chat template 'vicuna'; supported: chatml"));
  EXPECT_THAT(ChatTemplate::FromName("").status().message(), HasSubstr("unknown chat template"));
}

TEST(ChatTemplateTest, ResolvePrefersTheOperatorsName) {
  EXPECT_EQ(ResolveChatTemplate(Decode(kLlama3), "chatml")->name(), "chatml");
  EXPECT_EQ(ResolveChatTemplate(kUnsupported, "llama2")->name(), "llama2");
  EXPECT_EQ(ResolveChatTemplate(Decode(kLlama3), "")->name(), "llama3");
  EXPECT_EQ(ResolveChatTemplate("", "").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(ResolveChatTemplate("", "").status().message(),
              HasSubstr("the model has no chat template; start paged with --chat-template NAME"));
  EXPECT_EQ(ResolveChatTemplate(kUnsupported, "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ResolveChatTemplate(Decode(kPhi3), "")->executed());
  EXPECT_EQ(ResolveChatTemplate("", "nope").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ChatTemplateTest, ChatMLQwen2) {
  const ChatTemplate t = FromFixture(kQwen2);
  EXPECT_EQ(Render(t, {{"user", "Hi"}}, true),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(Render(t, kWithSystem, false),
            "<|im_start|>system\nYou are terse.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n"
            "<|im_start|>user\nHow are you?<|im_end|>\n");
  EXPECT_EQ(Render(t, kNoSystem, true),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n"
            "<|im_start|>user\nHow are you?<|im_end|>\n"
            "<|im_start|>assistant\n");
  // Content is not stripped; any order of roles is allowed.
  EXPECT_EQ(Render(t, {{"assistant", " a "}, {"system", "s"}}, false),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>assistant\n a <|im_end|>\n"
            "<|im_start|>system\ns<|im_end|>\n");
  EXPECT_EQ(t.end_of_turn(), std::vector<std::string>{"<|im_end|>"});
}

TEST(ChatTemplateTest, ChatMLByNameHasNoDefaultSystem) {
  const ChatTemplate t = Named("chatml");
  EXPECT_EQ(Render(t, {{"user", "Hi"}}, true),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(Render(FromFixture(kSmolLM), {{"user", "Hi"}}, false),
            "<|im_start|>user\nHi<|im_end|>\n");
}

TEST(ChatTemplateTest, Llama2) {
  const ChatTemplate t = FromFixture(kLlama2, Tokens("<s>", "</s>"));
  EXPECT_EQ(Render(t, kWithSystem, true),
            "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi [/INST] Hello! </s>"
            "<s>[INST] How are you? [/INST]");
  // add_generation_prompt changes nothing: a user turn ends with [/INST].
  EXPECT_EQ(Render(t, kWithSystem, false), Render(t, kWithSystem, true));
  EXPECT_EQ(Render(t, kNoSystem, true),
            "<s>[INST] Hi [/INST] Hello! </s><s>[INST] How are you? [/INST]");
  // content.strip() of the user content (with the system block) and of the
  // assistant's.
  EXPECT_EQ(Render(t, {{"user", "  Hi\n"}, {"assistant", "\tyes  "}}, false),
            "<s>[INST] Hi [/INST] yes </s>");
  EXPECT_EQ(Render(t, {{"system", " S "}, {"user", " Hi "}}, false),
            "<s>[INST] <<SYS>>\n S \n<</SYS>>\n\n Hi [/INST]");
  EXPECT_EQ(t.end_of_turn(), std::vector<std::string>{"</s>"});
}

TEST(ChatTemplateTest, Llama3) {
  const ChatTemplate t = FromFixture(kLlama3, Tokens("<|begin_of_text|>", "<|eot_id|>"));
  EXPECT_EQ(Render(t, kWithSystem, true),
            "<|begin_of_text|>"
            "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(Render(t, {{"user", " Hi\n"}}, false),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
  EXPECT_EQ(t.end_of_turn(), std::vector<std::string>{"<|eot_id|>"});
}

TEST(ChatTemplateTest, Llama31AlwaysWritesItsSystemPreamble) {
  const ChatTemplate t = FromFixture(kLlama31, Tokens("<|begin_of_text|>", "<|eot_id|>"));
  EXPECT_EQ(Render(t, {{"user", "Hi"}}, true),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(Render(t, {{"system", " Be brief. "}, {"user", "Hi"}}, false),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
  // By name: plain Llama 3.
  EXPECT_EQ(Render(Named("llama3"), {{"user", "Hi"}}, false),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
}

TEST(ChatTemplateTest, MistralFoldsTheSystemPromptIntoTheLastUserTurn) {
  const ChatTemplate t = FromFixture(kMistralV03, Tokens("<s>", "</s>"));
  EXPECT_EQ(Render(t, kWithSystem, true),
            "<s>[INST] Hi[/INST] Hello!</s>[INST] You are terse.\n\nHow are you?[/INST]");
  EXPECT_EQ(Render(t, kNoSystem, false),
            "<s>[INST] Hi[/INST] Hello!</s>[INST] How are you?[/INST]");
  // Not ending with a user turn: the upstream template drops the system prompt.
  EXPECT_EQ(Render(t, {{"system", "S"}, {"user", "Hi"}, {"assistant", " Yo \n"}}, false),
            "<s>[INST] Hi[/INST] Yo</s>");
  EXPECT_EQ(Render(t, {{"system", "S"}, {"user", "Hi"}}, false), "<s>[INST] S\n\nHi[/INST]");
  EXPECT_EQ(t.end_of_turn(), std::vector<std::string>{"</s>"});
}

TEST(ChatTemplateTest, Gemma) {
  const ChatTemplate t = FromFixture(kGemma, Tokens("<bos>", "<eos>"));
  EXPECT_EQ(Render(t, kNoSystem, true),
            "<bos><start_of_turn>user\nHi<end_of_turn>\n"
            "<start_of_turn>model\nHello!<end_of_turn>\n"
            "<start_of_turn>user\nHow are you?<end_of_turn>\n"
            "<start_of_turn>model\n");
  EXPECT_EQ(Render(t, {{"user", " Hi "}}, false), "<bos><start_of_turn>user\nHi<end_of_turn>\n");
  // The template's own refusal (the hand-written gemma format's differs).
  EXPECT_EQ(t.Render(kWithSystem, true).status().message(),
            "chat template: line 1: System role not supported");
  EXPECT_THAT(Named("gemma").Render(kWithSystem, true).status().message(),
              HasSubstr("this format has no system message"));
  EXPECT_EQ(t.end_of_turn(), std::vector<std::string>{"<end_of_turn>"});
}

TEST(ChatTemplateTest, Phi3IsExecutedWithNoFormatOfItsOwn) {
  const ChatTemplate t = FromFixture(kPhi3, Tokens("<s>", "<|endoftext|>"));
  EXPECT_EQ(t.format(), ChatFormat::kJinja);
  EXPECT_EQ(t.name(), "jinja");
  EXPECT_EQ(Render(t, kWithSystem, true),
            "<|system|>\nYou are terse.<|end|>\n<|user|>\nHi<|end|>\n"
            "<|assistant|>\nHello!<|end|>\n<|user|>\nHow are you?<|end|>\n<|assistant|>\n");
  // Without the generation prompt, its eos_token ends the text.
  EXPECT_EQ(Render(t, {{"user", "Hi"}}, false), "<|user|>\nHi<|end|>\n<|endoftext|>");
  EXPECT_EQ(t.end_of_turn(), std::vector<std::string>{"<|end|>"});
  EXPECT_THAT(t.Describe(), HasSubstr("executed"));
  // A template with no marker and nothing recognisable ends at its EOS.
  absl::StatusOr<ChatTemplate> plain = ChatTemplate::FromSource(
      "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}", Tokens("", "<eos>"));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->end_of_turn(), std::vector<std::string>{"<eos>"});
}

TEST(ChatTemplateTest, TemplatesTheEngineCannotRunFallBackToTheirMarkers) {
  struct Case {
    const char* source;
    const char* name;
    const char* why;
  };
  const Case cases[] = {
      // Outside the subset.
      {"{% for m in messages %}{{ '<|im_start|>' + m.role }}{% call x() %}{% endcall %}"
       "{% endfor %}",
       "chatml", "line 1: the 'call' tag is not supported"},
      // Renders, but not the messages.
      {"{{ '<|start_header_id|>' }}", "llama3", "does not write the content"},
      // Fails on a plain conversation.
      {"{{ raise_exception('never') }}<start_of_turn>", "gemma",
       "a one-message conversation fails: chat template: line 1: never"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.source);
    absl::StatusOr<ChatTemplate> t = ChatTemplate::FromSource(c.source);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_FALSE(t->executed());
    EXPECT_EQ(t->name(), c.name);
    EXPECT_THAT(t->fallback_reason(), HasSubstr(c.why));
    EXPECT_THAT(t->Describe(), HasSubstr("does not run"));
  }
  // The hand-written format renders.
  absl::StatusOr<ChatTemplate> t = ChatTemplate::FromSource(cases[0].source);
  EXPECT_EQ(Render(*t, {{"user", "Hi"}}, true),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, ExecutedTemplatesGetTheClockAndRefuseOtherRoles) {
  ChatTemplateOptions o;
  o.now = [] {
    std::tm tm{};
    tm.tm_year = 2026 - 1900;
    tm.tm_mon = 0;
    tm.tm_mday = 15;
    return tm;
  };
  absl::StatusOr<ChatTemplate> t = ChatTemplate::FromSource(
      "{{ strftime_now('%d %b %Y') }}{% for m in messages %}<|im_start|>{{ m.content }}{% endfor "
      "%}",
      o);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(Render(*t, {{"user", "Hi"}}, true), "15 Jan 2026<|im_start|>Hi");
  // Roles other than system, user and assistant stay refused (no tools yet).
  EXPECT_THAT(RenderStatus(*t, {{"tool", "x"}}).message(), HasSubstr("message 0 has role 'tool'"));
  EXPECT_THAT(RenderStatus(*t, {}).message(), HasSubstr("the conversation is empty"));
}

TEST(ChatTemplateTest, ConversationsAFormatCannotExpress) {
  for (const char* name : {"chatml", "llama2", "llama3", "mistral", "gemma"}) {
    SCOPED_TRACE(name);
    const ChatTemplate t = Named(name);
    EXPECT_THAT(RenderStatus(t, {}).message(), HasSubstr("the conversation is empty"));
    absl::Status s = RenderStatus(t, {{"user", "a"}, {"tool", "b"}});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr("message 1 has role 'tool'"));
    EXPECT_THAT(RenderStatus(t, {{"User", "a"}}).message(), HasSubstr("role 'User'"));
  }
  for (const char* name : {"llama2", "mistral", "gemma"}) {
    SCOPED_TRACE(name);
    const ChatTemplate t = Named(name);
    EXPECT_THAT(RenderStatus(t, {{"assistant", "a"}}).message(),
                HasSubstr("message 0 is 'assistant' where 'user' was due"));
    EXPECT_THAT(RenderStatus(t, {{"user", "a"}, {"user", "b"}}).message(),
                HasSubstr("message 1 is 'user' where 'assistant' was due"));
    EXPECT_THAT(RenderStatus(t, {{"user", "a"}, {"system", "b"}}).message(),
                HasSubstr("message 1 is 'system'"));
  }
  EXPECT_THAT(RenderStatus(Named("llama2"), {{"system", "s"}}).message(),
              HasSubstr("no user message"));
  EXPECT_THAT(RenderStatus(Named("llama2"), {{"system", "s"}, {"assistant", "a"}}).message(),
              HasSubstr("message 1 is 'assistant' where 'user' was due"));
}

}  // namespace
}  // namespace paged
