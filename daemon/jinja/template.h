// A Jinja subset engine for chat templates: parses a template once and
// renders it with variables, as transformers' apply_chat_template does with
// jinja2 (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, the
// loopcontrols extension, its tojson filter and its raise_exception and
// strftime_now globals). Written for the published chat templates (Llama 3.x,
// Qwen2.5 / Qwen3, Mistral, Gemma 2 / 3, Phi-3, gpt-oss); docs/serving.md
// lists the subset.
//
// The sandbox: a render is bounded in output size, steps, loop iterations,
// container sizes and macro call depth, so a hostile template can neither hang
// nor exhaust the server; errors name the template line.
//
//   ASSIGN_OR_RETURN(jinja::Template t, jinja::Template::Parse(source));
//   jinja::Object vars;
//   vars.Set("messages", jinja::Value::List({...}));
//   ASSIGN_OR_RETURN(std::string text, t.Render(vars));
#pragma once

#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "daemon/jinja/value.h"

namespace paged::jinja {

struct Program;

struct RenderLimits {
  // The rendered text, and any one string a template builds.
  size_t max_output_bytes = size_t{8} << 20;
  // Iterations of all loops of one render together.
  int64_t max_loop_iterations = 1'000'000;
  // Work of one render: one per statement, expression and iteration, plus one
  // per 256 bytes of text and per item of a list a template builds.
  int64_t max_steps = 20'000'000;
  // Items of any list, dict or range a template builds.
  size_t max_items = 1'000'000;
  // Nested macro calls.
  int max_call_depth = 64;
};

struct RenderOptions {
  RenderLimits limits;
  // The local time strftime_now() formats; null: the system clock.
  std::function<std::tm()> now;
};

class Template {
 public:
  // INVALID_ARGUMENT "line N: ..." for a source that does not parse or uses
  // a tag outside the subset ({% include %}, {% call %}, ...).
  static absl::StatusOr<Template> Parse(std::string_view source);

  // The text of the template with `variables` (name -> value) defined over
  // the globals range, namespace, dict, raise_exception and strftime_now.
  // INVALID_ARGUMENT "line N: ..." for an error the template meets
  // (raise_exception's message as it is; an undefined value used where it
  // cannot be; a type error); RESOURCE_EXHAUSTED "line N: ..." for a sandbox
  // limit.
  absl::StatusOr<std::string> Render(const Object& variables,
                                     const RenderOptions& options = {}) const;

 private:
  explicit Template(std::shared_ptr<const Program> program) : program_(std::move(program)) {}

  std::shared_ptr<const Program> program_;
};

}  // namespace paged::jinja
