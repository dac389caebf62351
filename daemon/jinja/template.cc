#include "daemon/jinja/template.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "daemon/jinja/ast.h"
#include "daemon/jinja/error.h"
#include "daemon/jinja/interpreter.h"
#include "daemon/jinja/parser.h"

namespace paged::jinja {
namespace {

absl::Status ToStatus(const TemplateError& e) {
  const std::string message =
      e.line() > 0 ? absl::StrCat("line ", e.line(), ": ", e.what()) : std::string(e.what());
  if (e.kind() == ErrorKind::kLimit) return absl::ResourceExhaustedError(message);
  return absl::InvalidArgumentError(message);
}

}  // namespace

absl::StatusOr<Template> Template::Parse(std::string_view source) {
  try {
    return Template(jinja::Parse(source));
  } catch (const TemplateError& e) {
    return ToStatus(e);
  }
}

absl::StatusOr<std::string> Template::Render(const Object& variables,
                                             const RenderOptions& options) const {
  try {
    Interpreter in(*program_, options);
    return in.Run(variables);
  } catch (const TemplateError& e) {
    return ToStatus(e);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("out of memory rendering the template");
  }
}

}  // namespace paged::jinja
