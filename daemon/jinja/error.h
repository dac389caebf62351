// The engine's internal error. The lexer, parser, interpreter and builtins
// throw it; Template::Parse and Template::Render (template.h) catch it and
// answer an absl::Status, so it never leaves the library.
#pragma once

#include <stdexcept>
#include <string>

namespace paged::jinja {

enum class ErrorKind {
  kSyntax,     // the source does not parse
  kRuntime,    // a type error, an unsupported operation, a bad argument
  kUndefined,  // an operation on an undefined value (jinja2's UndefinedError)
  kRaised,     // the template called raise_exception(message)
  kLimit,      // a sandbox limit (output size, steps, loop iterations, depth)
};

class TemplateError : public std::runtime_error {
 public:
  // `line` 0: not known where; the interpreter fills in the line it is at.
  TemplateError(ErrorKind kind, const std::string& message, int line = 0)
      : std::runtime_error(message), kind_(kind), line_(line) {}

  ErrorKind kind() const { return kind_; }
  int line() const { return line_; }
  void set_line(int line) { line_ = line; }

 private:
  ErrorKind kind_;
  int line_;
};

[[noreturn]] inline void ThrowRuntime(const std::string& message) {
  throw TemplateError(ErrorKind::kRuntime, message);
}

}  // namespace paged::jinja
