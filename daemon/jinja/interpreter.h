// The interpreter (internal to the engine): runs a Program's statements and
// evaluates its expressions with jinja2's scoping (a for loop's body and a
// macro's body get scopes of their own; if does not), counting the work
// against the render's limits. Errors are thrown as TemplateError.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "daemon/jinja/ast.h"
#include "daemon/jinja/template.h"
#include "daemon/jinja/value.h"

namespace paged::jinja {

// Variables of one level: the globals, the template's top level, a loop
// iteration, a macro call.
class Scope {
 public:
  explicit Scope(std::shared_ptr<const Scope> parent) : parent_(std::move(parent)) {}
  // Here or in an enclosing scope; null when not defined.
  const Value* Find(const std::string& name) const;
  void Set(const std::string& name, Value v) { vars_[name] = std::move(v); }

 private:
  std::shared_ptr<const Scope> parent_;
  std::unordered_map<std::string, Value> vars_;
};

class Interpreter {
 public:
  Interpreter(const Program& program, const RenderOptions& options);
  ~Interpreter();
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;

  // The template's text; throws TemplateError (its line set).
  std::string Run(const Object& variables);

  // For the builtins.
  Value Call(const Value& callee, CallArgs& args);
  Value CallMacro(const Stmt& macro, const std::shared_ptr<Scope>& closure, CallArgs& args);
  Value Filter(const std::string& name, const Value& value, CallArgs& args);
  bool Test(const std::string& name, const Value& value, CallArgs& args);
  // Bytes of text read or built that count as one step.
  static constexpr int64_t kBytesPerStep = 16;

  // Counts `n` steps; throws past the limit.
  void Charge(int64_t n);
  // Charges reading or building `bytes` of text.
  void ChargeBytes(size_t bytes) { Charge(int64_t(bytes) / kBytesPerStep + 1); }
  // Charges printing a value to `bytes` of text (str(), tojson: costlier per
  // byte than copying).
  void ChargePrinted(size_t bytes) { Charge(int64_t(bytes) / 2 + 1); }
  // Throws when a string of `bytes` would be over the output limit.
  void CheckSize(size_t bytes) const;
  // CheckSize, and charges building the string.
  void CheckString(size_t bytes);
  // Throws when a container of `items` would be over the item limit; charges
  // its building.
  void CheckItems(size_t items);
  // Every namespace a render makes is registered, to be emptied at the end.
  void TrackNamespace(const Value& ns);
  const RenderOptions& options() const { return options_; }
  int line() const { return line_; }

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  Flow Execute(const Body& body, const std::shared_ptr<Scope>& scope);
  Flow ExecuteOne(const Stmt& s, const std::shared_ptr<Scope>& scope);
  Flow ExecuteFor(const Stmt& s, const std::shared_ptr<Scope>& scope);
  void Assign(const Stmt& s, Scope& scope, const Value& v);
  // `body` rendered into a string of its own.
  std::string Capture(const Body& body, const std::shared_ptr<Scope>& scope);
  void Write(std::string_view text);

  Value Eval(const Expr& e, const std::shared_ptr<Scope>& scope);
  Value Lookup(const std::string& name, const Scope& scope) const;
  CallArgs EvalArgs(const Expr& e, size_t first, const std::shared_ptr<Scope>& scope);

  const Program& program_;
  const RenderOptions& options_;
  std::shared_ptr<Scope> globals_;
  std::string* out_ = nullptr;  // where text goes: the result, a macro's or a set block's
  int line_ = 0;
  int call_depth_ = 0;
  int64_t steps_ = 0;
  int64_t iterations_ = 0;
  std::vector<std::shared_ptr<Scope>> closures_;  // scopes macros were defined in
  std::vector<Value> namespaces_;
};

}  // namespace paged::jinja
