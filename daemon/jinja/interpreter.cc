#include "daemon/jinja/interpreter.h"

#include "absl/strings/str_cat.h"
#include "daemon/jinja/builtins.h"
#include "daemon/jinja/error.h"
#include "daemon/jinja/operators.h"

namespace paged::jinja {
namespace {

// A macro as a value: its definition and the scope it was defined in. The
// scope holds the macro, so the macro holds it weakly (the interpreter keeps
// it alive until the render ends).
class Macro final : public Callable {
 public:
  Macro(const Stmt* def, std::weak_ptr<Scope> closure) : def_(def), closure_(std::move(closure)) {}
  const std::string& name() const override { return def_->targets[0]; }
  Value Call(Interpreter& in, CallArgs& args) const override {
    std::shared_ptr<Scope> closure = closure_.lock();
    if (closure == nullptr) ThrowRuntime("macro '" + name() + "' called after its render");
    return in.CallMacro(*def_, closure, args);
  }

 private:
  const Stmt* def_;
  std::weak_ptr<Scope> closure_;
};

std::optional<int64_t> SliceBound(const Value& v) {
  if (v.is_undefined() || v.is_none()) return std::nullopt;
  if (!v.is_integer()) {
    ThrowRuntime("slice indices must be integers or None");
  }
  return v.integer();
}

}  // namespace

const Value* Scope::Find(const std::string& name) const {
  for (const Scope* s = this; s != nullptr; s = s->parent_.get()) {
    auto it = s->vars_.find(name);
    if (it != s->vars_.end()) return &it->second;
  }
  return nullptr;
}

Interpreter::Interpreter(const Program& program, const RenderOptions& options)
    : program_(program), options_(options), globals_(std::make_shared<Scope>(nullptr)) {
  AddGlobals(globals_.get());
}

Interpreter::~Interpreter() {
  // A namespace may hold itself ({% set ns.me = ns %}): empty them all so
  // that no cycle outlives the render.
  for (const Value& ns : namespaces_) ns.namespace_attributes().Clear();
}

void Interpreter::TrackNamespace(const Value& ns) { namespaces_.push_back(ns); }

std::string Interpreter::Run(const Object& variables) {
  auto top = std::make_shared<Scope>(globals_);
  for (const auto& [k, v] : variables.items()) {
    if (k.is_string()) top->Set(k.string(), v);
  }
  std::string out;
  out_ = &out;
  try {
    Execute(program_.body, top);
  } catch (TemplateError& e) {
    if (e.line() == 0) e.set_line(line_);
    throw;
  }
  return out;
}

void Interpreter::Charge(int64_t n) {
  steps_ += n;
  if (steps_ > options_.limits.max_steps) {
    throw TemplateError(ErrorKind::kLimit, absl::StrCat("the template ran over its limit of ",
                                                        options_.limits.max_steps, " steps"));
  }
}

void Interpreter::CheckSize(size_t bytes) const {
  if (bytes > options_.limits.max_output_bytes) {
    throw TemplateError(ErrorKind::kLimit,
                        absl::StrCat("a string of ", bytes, " bytes is over the limit of ",
                                     options_.limits.max_output_bytes));
  }
}

void Interpreter::CheckString(size_t bytes) {
  CheckSize(bytes);
  ChargeBytes(bytes);
}

void Interpreter::CheckItems(size_t items) {
  if (items > options_.limits.max_items) {
    throw TemplateError(ErrorKind::kLimit,
                        absl::StrCat("a container of ", items, " items is over the limit of ",
                                     options_.limits.max_items));
  }
  Charge(int64_t(items) + 1);
}

void Interpreter::Write(std::string_view text) {
  if (out_->size() + text.size() > options_.limits.max_output_bytes) {
    throw TemplateError(ErrorKind::kLimit,
                        absl::StrCat("the output is over the limit of ",
                                     options_.limits.max_output_bytes, " bytes"));
  }
  ChargeBytes(text.size());
  out_->append(text);
}

std::string Interpreter::Capture(const Body& body, const std::shared_ptr<Scope>& scope) {
  std::string text;
  std::string* saved = out_;
  out_ = &text;
  try {
    Execute(body, scope);
  } catch (...) {
    out_ = saved;
    throw;
  }
  out_ = saved;
  return text;
}

Interpreter::Flow Interpreter::Execute(const Body& body, const std::shared_ptr<Scope>& scope) {
  for (const StmtPtr& s : body) {
    const Flow f = ExecuteOne(*s, scope);
    if (f != Flow::kNormal) return f;
  }
  return Flow::kNormal;
}

Interpreter::Flow Interpreter::ExecuteOne(const Stmt& s, const std::shared_ptr<Scope>& scope) {
  line_ = s.line;
  Charge(1);
  switch (s.kind) {
    case StmtKind::kText:
      Write(s.text);
      return Flow::kNormal;
    case StmtKind::kOutput: {
      const Value v = Eval(*s.expr, scope);
      if (v.is_string()) {
        Write(v.string());
      } else {
        const std::string text = v.Str();
        ChargePrinted(text.size());
        Write(text);
      }
      return Flow::kNormal;
    }
    case StmtKind::kIf:
      for (const auto& [cond, body] : s.branches) {
        if (Eval(*cond, scope).Truthy()) return Execute(body, scope);
      }
      return Execute(s.else_body, scope);
    case StmtKind::kFor:
      return ExecuteFor(s, scope);
    case StmtKind::kSet:
      Assign(s, *scope, Eval(*s.expr, scope));
      return Flow::kNormal;
    case StmtKind::kSetAttribute: {
      const Value v = Eval(*s.expr, scope);
      line_ = s.line;
      const Value* ns = scope->Find(s.targets[0]);
      if (ns == nullptr || ns->kind() != Value::Kind::kNamespace) {
        ThrowRuntime(
            absl::StrCat("cannot assign attribute on non-namespace object '", s.targets[0], "'"));
      }
      ns->namespace_attributes().Set(Value(s.targets[1]), v);
      return Flow::kNormal;
    }
    case StmtKind::kSetBlock: {
      Value v(Capture(s.body, std::make_shared<Scope>(scope)));
      if (s.filter != nullptr) {
        CallArgs args = EvalArgs(*s.filter, 1, scope);
        v = Filter(s.filter->name, v, args);
      }
      Assign(s, *scope, v);
      return Flow::kNormal;
    }
    case StmtKind::kMacro:
      closures_.push_back(scope);
      scope->Set(s.targets[0], Value::Function(std::make_shared<Macro>(&s, scope)));
      return Flow::kNormal;
    case StmtKind::kBreak:
      return Flow::kBreak;
    case StmtKind::kContinue:
      return Flow::kContinue;
    case StmtKind::kBlock:
      return Execute(s.body, scope);
  }
  return Flow::kNormal;
}

void Interpreter::Assign(const Stmt& s, Scope& scope, const Value& v) {
  if (!s.unpack) {
    scope.Set(s.targets[0], v);
    return;
  }
  const std::vector<Value> items = Iterate(*this, v);
  if (items.size() != s.targets.size()) {
    ThrowRuntime(items.size() > s.targets.size()
                     ? absl::StrCat("too many values to unpack (expected ", s.targets.size(), ")")
                     : absl::StrCat("not enough values to unpack (expected ", s.targets.size(),
                                    ", got ", items.size(), ")"));
  }
  for (size_t i = 0; i < items.size(); ++i) scope.Set(s.targets[i], items[i]);
}

Interpreter::Flow Interpreter::ExecuteFor(const Stmt& s, const std::shared_ptr<Scope>& scope) {
  std::vector<Value> items = Iterate(*this, Eval(*s.expr, scope));
  if (s.filter != nullptr) {
    std::vector<Value> kept;
    for (Value& item : items) {
      auto probe = std::make_shared<Scope>(scope);
      Assign(s, *probe, item);
      if (Eval(*s.filter, probe).Truthy()) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  const int64_t n = int64_t(items.size());
  if (n == 0) return Execute(s.else_body, std::make_shared<Scope>(scope));
  // loop.cycle of every iteration: reads the iteration it is at.
  auto at = std::make_shared<int64_t>(0);
  const Value cycle = Value::Function(MakeBuiltin("loop.cycle", [at](Interpreter&, CallArgs& a) {
    if (a.positional.empty()) ThrowRuntime("no items for cycling given");
    return a.positional[size_t(*at) % a.positional.size()];
  }));
  for (int64_t i = 0; i < n; ++i) {
    *at = i;
    if (++iterations_ > options_.limits.max_loop_iterations) {
      throw TemplateError(ErrorKind::kLimit,
                          absl::StrCat("the loops ran over their limit of ",
                                       options_.limits.max_loop_iterations, " iterations"),
                          s.line);
    }
    Charge(1);
    auto iteration = std::make_shared<Scope>(scope);
    Assign(s, *iteration, items[size_t(i)]);
    Object loop;
    loop.Append("index", Value(i + 1));
    loop.Append("index0", Value(i));
    loop.Append("revindex", Value(n - i));
    loop.Append("revindex0", Value(n - i - 1));
    loop.Append("first", Value(i == 0));
    loop.Append("last", Value(i == n - 1));
    loop.Append("length", Value(n));
    loop.Append("depth", Value(1));
    loop.Append("depth0", Value(0));
    loop.Append("previtem",
                i > 0 ? items[size_t(i - 1)] : Value::Undefined("there is no previous item"));
    loop.Append("nextitem",
                i + 1 < n ? items[size_t(i + 1)] : Value::Undefined("there is no next item"));
    loop.Append("cycle", cycle);
    iteration->Set("loop", Value::Dict(std::move(loop)));
    const Flow f = Execute(s.body, iteration);
    if (f == Flow::kBreak) break;
  }
  return Flow::kNormal;
}

Value Interpreter::CallMacro(const Stmt& macro, const std::shared_ptr<Scope>& closure,
                             CallArgs& args) {
  const std::string& name = macro.targets[0];
  if (args.positional.size() > macro.params.size()) {
    ThrowRuntime(absl::StrCat("macro '", name, "' takes not more than ", macro.params.size(),
                              " argument(s)"));
  }
  if (call_depth_ >= options_.limits.max_call_depth) {
    throw TemplateError(ErrorKind::kLimit, absl::StrCat("macro calls nested over ",
                                                        options_.limits.max_call_depth, " deep"));
  }
  auto scope = std::make_shared<Scope>(closure);
  std::vector<bool> bound(macro.params.size(), false);
  for (size_t i = 0; i < args.positional.size(); ++i) {
    scope->Set(macro.params[i].first, args.positional[i]);
    bound[i] = true;
  }
  for (auto& [key, value] : args.keyword) {
    size_t i = 0;
    while (i < macro.params.size() && macro.params[i].first != key) ++i;
    if (i == macro.params.size()) {
      ThrowRuntime(absl::StrCat("macro '", name, "' takes no keyword argument '", key, "'"));
    }
    if (bound[i]) {
      ThrowRuntime(absl::StrCat("macro '", name, "' got multiple values for argument '", key, "'"));
    }
    scope->Set(key, value);
    bound[i] = true;
  }
  const int caller_line = line_;
  for (size_t i = 0; i < macro.params.size(); ++i) {
    if (bound[i]) continue;
    const auto& [param, def] = macro.params[i];
    scope->Set(param, def != nullptr ? Eval(*def, scope)
                                     : Value::Undefined(absl::StrCat("parameter '", param,
                                                                     "' was not provided")));
  }
  ++call_depth_;
  std::string text;
  try {
    text = Capture(macro.body, scope);
  } catch (...) {
    --call_depth_;
    throw;
  }
  --call_depth_;
  line_ = caller_line;
  return Value(std::move(text));
}

Value Interpreter::Call(const Value& callee, CallArgs& args) {
  if (callee.is_undefined()) ThrowUndefined(callee);
  if (callee.kind() != Value::Kind::kCallable) {
    ThrowRuntime(absl::StrCat("'", callee.TypeName(), "' object is not callable"));
  }
  return callee.callable().Call(*this, args);
}

Value Interpreter::Filter(const std::string& name, const Value& value, CallArgs& args) {
  return ApplyFilter(*this, name, value, args);
}

bool Interpreter::Test(const std::string& name, const Value& value, CallArgs& args) {
  return ApplyTest(*this, name, value, args);
}

Value Interpreter::Lookup(const std::string& name, const Scope& scope) const {
  const Value* v = scope.Find(name);
  if (v != nullptr) return *v;
  return Value::Undefined(absl::StrCat("'", name, "' is undefined"));
}

CallArgs Interpreter::EvalArgs(const Expr& e, size_t first, const std::shared_ptr<Scope>& scope) {
  CallArgs args;
  for (size_t i = first; i < e.items.size(); ++i)
    args.positional.push_back(Eval(*e.items[i], scope));
  for (const auto& [key, expr] : e.keywords) args.keyword.emplace_back(key, Eval(*expr, scope));
  return args;
}

Value Interpreter::Eval(const Expr& e, const std::shared_ptr<Scope>& scope) {
  line_ = e.line;
  Charge(1);
  switch (e.kind) {
    case ExprKind::kLiteral:
      return e.literal;
    case ExprKind::kName:
      return Lookup(e.name, *scope);
    case ExprKind::kList:
    case ExprKind::kTuple: {
      Array items;
      items.reserve(e.items.size());
      for (const ExprPtr& x : e.items) items.push_back(Eval(*x, scope));
      return e.kind == ExprKind::kList ? Value::List(std::move(items))
                                       : Value::Tuple(std::move(items));
    }
    case ExprKind::kDict: {
      Object o;
      for (size_t i = 0; i + 1 < e.items.size(); i += 2) {
        Value k = Eval(*e.items[i], scope);
        o.Set(std::move(k), Eval(*e.items[i + 1], scope));
      }
      return Value::Dict(std::move(o));
    }
    case ExprKind::kAttr: {
      const Value obj = Eval(*e.items[0], scope);
      line_ = e.line;
      return GetAttr(obj, e.name);
    }
    case ExprKind::kItem: {
      const Value obj = Eval(*e.items[0], scope);
      const Value key = Eval(*e.items[1], scope);
      line_ = e.line;
      return GetItem(*this, obj, key);
    }
    case ExprKind::kSlice: {
      const Value obj = Eval(*e.items[0], scope);
      std::optional<int64_t> bounds[3];
      for (int i = 0; i < 3; ++i) {
        if (e.items[size_t(i) + 1] != nullptr) {
          bounds[i] = SliceBound(Eval(*e.items[size_t(i) + 1], scope));
        }
      }
      line_ = e.line;
      return SliceOf(*this, obj, bounds[0], bounds[1], bounds[2]);
    }
    case ExprKind::kCall: {
      const Value callee = Eval(*e.items[0], scope);
      CallArgs args = EvalArgs(e, 1, scope);
      line_ = e.line;
      return Call(callee, args);
    }
    case ExprKind::kFilter: {
      const Value value = Eval(*e.items[0], scope);
      CallArgs args = EvalArgs(e, 1, scope);
      line_ = e.line;
      return Filter(e.name, value, args);
    }
    case ExprKind::kTest: {
      const Value value = Eval(*e.items[0], scope);
      CallArgs args = EvalArgs(e, 1, scope);
      line_ = e.line;
      return Value(Test(e.name, value, args));
    }
    case ExprKind::kNeg:
      return Negate(Eval(*e.items[0], scope));
    case ExprKind::kPos:
      return UnaryPlus(Eval(*e.items[0], scope));
    case ExprKind::kNot:
      return Value(!Eval(*e.items[0], scope).Truthy());
    case ExprKind::kAnd: {
      Value left = Eval(*e.items[0], scope);
      if (!left.Truthy()) return left;
      return Eval(*e.items[1], scope);
    }
    case ExprKind::kOr: {
      Value left = Eval(*e.items[0], scope);
      if (left.Truthy()) return left;
      return Eval(*e.items[1], scope);
    }
    case ExprKind::kBinary: {
      const Value a = Eval(*e.items[0], scope);
      const Value b = Eval(*e.items[1], scope);
      line_ = e.line;
      return BinaryOp(*this, e.name, a, b);
    }
    case ExprKind::kCompare: {
      Value left = Eval(*e.items[0], scope);
      for (size_t i = 0; i < e.ops.size(); ++i) {
        Value right = Eval(*e.items[i + 1], scope);
        line_ = e.line;
        if (!CompareOp(*this, e.ops[i], left, right)) return Value(false);
        left = std::move(right);
      }
      return Value(true);
    }
    case ExprKind::kCond:
      if (Eval(*e.items[0], scope).Truthy()) return Eval(*e.items[1], scope);
      if (e.items[2] != nullptr) return Eval(*e.items[2], scope);
      return Value::Undefined(absl::StrCat("the inline if-expression on line ", e.line,
                                           " evaluated to false and no else section was "
                                           "defined"));
  }
  return Value();
}

}  // namespace paged::jinja
