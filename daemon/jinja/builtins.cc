#include "daemon/jinja/builtins.h"

#include <unicode/uchar.h>

#include <algorithm>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "daemon/jinja/error.h"
#include "daemon/jinja/operators.h"
#include "daemon/jinja/text.h"

namespace paged::jinja {
namespace {

// jinja2's sandbox refuses more (safe_range's MAX_RANGE).
constexpr int64_t kMaxRange = 100000;

class Builtin final : public Callable {
 public:
  Builtin(std::string name, std::function<Value(Interpreter&, CallArgs&)> fn)
      : name_(std::move(name)), fn_(std::move(fn)) {}
  const std::string& name() const override { return name_; }
  Value Call(Interpreter& in, CallArgs& args) const override { return fn_(in, args); }

 private:
  std::string name_;
  std::function<Value(Interpreter&, CallArgs&)> fn_;
};

Value Range(Interpreter& in, CallArgs& args) {
  if (!args.keyword.empty()) ThrowRuntime("range() takes no keyword arguments");
  const size_t n = args.positional.size();
  if (n < 1 || n > 3) ThrowRuntime(absl::StrCat("range expected 1 to 3 arguments, got ", n));
  for (const Value& v : args.positional) {
    if (!v.is_integer()) {
      ThrowRuntime(absl::StrCat("'", v.TypeName(), "' object cannot be interpreted as an integer"));
    }
  }
  const int64_t start = n == 1 ? 0 : args.positional[0].integer();
  const int64_t stop = n == 1 ? args.positional[0].integer() : args.positional[1].integer();
  const int64_t step = n == 3 ? args.positional[2].integer() : 1;
  if (step == 0) ThrowRuntime("range() arg 3 must not be zero");
  const __int128 span = step > 0 ? __int128(stop) - start : __int128(start) - stop;
  const __int128 count = span <= 0 ? 0
                                   : (span + (step > 0 ? step : -__int128(step)) - 1) /
                                         (step > 0 ? step : -__int128(step));
  if (count > kMaxRange) {
    ThrowRuntime(absl::StrCat("range too big: the sandbox blocks ranges larger than ", kMaxRange));
  }
  in.CheckItems(size_t(count));
  Array items;
  items.reserve(size_t(count));
  for (int64_t i = 0, v = start; i < int64_t(count); ++i, v += step) items.push_back(Value(v));
  return Value::List(std::move(items));
}

// dict(mapping?, **kwargs) and namespace(mapping?, **kwargs).
Object AttributesOf(CallArgs& args, const std::string& what) {
  if (args.positional.size() > 1) {
    ThrowRuntime(absl::StrCat(what, " expected at most 1 positional argument"));
  }
  Object o;
  if (!args.positional.empty()) {
    const Value& m = args.positional[0];
    if (m.kind() != Value::Kind::kDict && m.kind() != Value::Kind::kNamespace) {
      ThrowRuntime(absl::StrCat(what, " takes a mapping, not '", m.TypeName(), "'"));
    }
    o = m.object();
  }
  for (auto& [k, v] : args.keyword) o.Set(Value(k), v);
  return o;
}

Value StrftimeNow(Interpreter& in, CallArgs& args) {
  std::vector<std::optional<Value>> a = BindArgs(args, {"format"}, "strftime_now");
  if (!a[0] || !a[0]->is_string()) ThrowRuntime("strftime_now() takes a format string");
  std::tm tm{};
  if (in.options().now) {
    tm = in.options().now();
  } else {
    const std::time_t t = std::time(nullptr);
    localtime_r(&t, &tm);
  }
  const std::string& format = a[0]->string();
  if (format.empty()) return Value("");
  in.CheckString(format.size() * 16);
  std::string buf(format.size() * 16 + 64, '\0');
  const size_t n = std::strftime(buf.data(), buf.size(), format.c_str(), &tm);
  buf.resize(n);
  return Value(std::move(buf));
}

// ---- methods ----

using Method = std::function<Value(Interpreter&, const Value& self, CallArgs&)>;

std::optional<std::string> OptionalString(const std::optional<Value>& v, const std::string& what) {
  if (!v || v->is_none()) return std::nullopt;
  if (!v->is_string()) {
    ThrowRuntime(absl::StrCat(what, " arg must be None or str, not ", v->TypeName()));
  }
  return v->string();
}

Value StringList(std::vector<std::string> parts) {
  Array items;
  items.reserve(parts.size());
  for (std::string& p : parts) items.push_back(Value(std::move(p)));
  return Value::List(std::move(items));
}

// The code point index of byte offset `at` in s.
int64_t CodePointIndex(const std::string& s, size_t at) {
  return int64_t(text::Length(std::string_view(s).substr(0, at)));
}

bool PrefixMatch(const Value& self, const Value& affix, bool suffix) {
  auto one = [&](const Value& a) {
    if (!a.is_string()) {
      ThrowRuntime(absl::StrCat(suffix ? "endswith" : "startswith",
                                " first arg must be str or a tuple of str, not ", a.TypeName()));
    }
    const std::string& s = self.string();
    const std::string& x = a.string();
    return suffix ? s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0
                  : s.compare(0, x.size(), x) == 0;
  };
  if (affix.kind() == Value::Kind::kTuple) {
    for (const Value& a : affix.array()) {
      if (one(a)) return true;
    }
    return false;
  }
  return one(affix);
}

template <class Pred>
bool AllChars(const std::string& s, Pred pred) {
  const std::vector<char32_t> cps = text::Decode(s);
  if (cps.empty()) return false;
  for (char32_t c : cps) {
    if (!pred(c)) return false;
  }
  return true;
}

std::vector<std::string> SplitLines(const std::string& s, bool keepends) {
  std::vector<std::string> out;
  const std::vector<char32_t> cps = text::Decode(s);
  std::vector<char32_t> line;
  for (size_t i = 0; i < cps.size(); ++i) {
    const char32_t c = cps[i];
    const bool brk = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D ||
                     c == 0x1E || c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!brk) {
      line.push_back(c);
      continue;
    }
    const bool crlf = c == '\r' && i + 1 < cps.size() && cps[i + 1] == '\n';
    if (keepends) {
      line.push_back(c);
      if (crlf) line.push_back('\n');
    }
    if (crlf) ++i;
    out.push_back(text::Encode(line));
    line.clear();
  }
  if (!line.empty()) out.push_back(text::Encode(line));
  return out;
}

const std::vector<std::pair<std::string, Method>>& StringMethods() {
  static const auto* methods = new std::vector<std::pair<std::string, Method>>{
      {"strip",
       [](Interpreter& in, const Value& self, CallArgs& args) {
         auto a = BindArgs(args, {"chars"}, "str.strip");
         return Value(text::Strip(self.string(), OptionalString(a[0], "strip"), true, true));
       }},
      {"lstrip",
       [](Interpreter& in, const Value& self, CallArgs& args) {
         auto a = BindArgs(args, {"chars"}, "str.lstrip");
         return Value(text::Strip(self.string(), OptionalString(a[0], "lstrip"), true, false));
       }},
      {"rstrip",
       [](Interpreter& in, const Value& self, CallArgs& args) {
         auto a = BindArgs(args, {"chars"}, "str.rstrip");
         return Value(text::Strip(self.string(), OptionalString(a[0], "rstrip"), false, true));
       }},
      {"split",
       [](Interpreter& in, const Value& self, CallArgs& args) {
         auto a = BindArgs(args, {"sep", "maxsplit"}, "str.split");
         std::vector<std::string> parts = text::Split(self.string(), OptionalString(a[0], "split"),
                                                      IntArg(a[1], "maxsplit", -1));
         in.CheckItems(parts.size());
         return StringList(std::move(parts));
       }},
      {"rsplit",
       [](Interpreter& in, const Value& self, CallArgs& args) {
         auto a = BindArgs(args, {"sep", "maxsplit"}, "str.rsplit");
         std::vector<std::string> parts = text::RSplit(
             self.string(), OptionalString(a[0], "rsplit"), IntArg(a[1], "maxsplit", -1));
         in.CheckItems(parts.size());
         return StringList(std::move(parts));
       }},
      {"splitlines",
       [](Interpreter& in, const Value& self, CallArgs& args) {
         auto a = BindArgs(args, {"keepends"}, "str.splitlines");
         std::vector<std::string> parts = SplitLines(self.string(), BoolArg(a[0], false));
         in.CheckItems(parts.size());
         return StringList(std::move(parts));
       }},
      {"startswith",
       [](Interpreter&, const Value& self, CallArgs& args) {
         auto a = BindArgs(args, {"prefix"}, "str.startswith");
         if (!a[0]) ThrowRuntime("startswith() takes a prefix");
         return Value(PrefixMatch(self, *a[0], false));
       }},
      {"endswith",
       [](Interpreter&, const Value& self, CallArgs& args) {
         auto a = BindArgs(args, {"suffix"}, "str.endswith");
         if (!a[0]) ThrowRuntime("endswith() takes a suffix");
         return Value(PrefixMatch(self, *a[0], true));
       }},
      {"upper", [](Interpreter&, const Value& self,
                   CallArgs& args) { return Value(text::Upper(self.string())); }},
      {"lower", [](Interpreter&, const Value& self,
                   CallArgs& args) { return Value(text::Lower(self.string())); }},
      {"title", [](Interpreter&, const Value& self,
                   CallArgs& args) { return Value(text::Title(self.string())); }},
      {"capitalize", [](Interpreter&, const Value& self,
                        CallArgs& args) { return Value(text::Capitalize(self.string())); }},
      {"replace",
       [](Interpreter& in, const Value& self, CallArgs& args) {
         auto a = BindArgs(args, {"old", "new", "count"}, "str.replace");
         const std::string old = StringArg(a[0], "replace() old", "");
         const std::string with = StringArg(a[1], "replace() new", "");
         if (!a[0] || !a[1]) ThrowRuntime("replace() takes old and new");
         std::string out = text::Replace(self.string(), old, with, IntArg(a[2], "count", -1));
         in.CheckString(out.size());
         return Value(std::move(out));
       }},
      {"find",
       [](Interpreter&, const Value& self, CallArgs& args) {
         auto a = BindArgs(args, {"sub"}, "str.find");
         const size_t at = self.string().find(StringArg(a[0], "find() sub", ""));
         return Value(at == std::string::npos ? int64_t(-1) : CodePointIndex(self.string(), at));
       }},
      {"rfind",
       [](Interpreter&, const Value& self, CallArgs& args) {
         auto a = BindArgs(args, {"sub"}, "str.rfind");
         const size_t at = self.string().rfind(StringArg(a[0], "rfind() sub", ""));
         return Value(at == std::string::npos ? int64_t(-1) : CodePointIndex(self.string(), at));
       }},
      {"count",
       [](Interpreter&, const Value& self, CallArgs& args) {
         auto a = BindArgs(args, {"sub"}, "str.count");
         const std::string sub = StringArg(a[0], "count() sub", "");
         if (sub.empty()) return Value(int64_t(text::Length(self.string()) + 1));
         int64_t n = 0;
         for (size_t at = self.string().find(sub); at != std::string::npos;
              at = self.string().find(sub, at + sub.size())) {
           ++n;
         }
         return Value(n);
       }},
      {"join",
       [](Interpreter& in, const Value& self, CallArgs& args) {
         auto a = BindArgs(args, {"iterable"}, "str.join");
         if (!a[0]) ThrowRuntime("join() takes an iterable");
         std::string out;
         const std::vector<Value> items = Iterate(in, *a[0]);
         for (size_t i = 0; i < items.size(); ++i) {
           if (!items[i].is_string()) {
             ThrowRuntime(absl::StrCat("sequence item ", i, ": expected str instance, ",
                                       items[i].TypeName(), " found"));
           }
           if (i > 0) out += self.string();
           out += items[i].string();
           in.CheckSize(out.size());
         }
         in.ChargeBytes(out.size());
         return Value(std::move(out));
       }},
      {"isdigit",
       [](Interpreter&, const Value& self, CallArgs& args) {
         return Value(AllChars(self.string(), [](char32_t c) { return u_isdigit(UChar32(c)); }));
       }},
      {"isalpha",
       [](Interpreter&, const Value& self, CallArgs& args) {
         return Value(AllChars(self.string(), [](char32_t c) { return u_isalpha(UChar32(c)); }));
       }},
      {"isalnum",
       [](Interpreter&, const Value& self, CallArgs& args) {
         return Value(AllChars(self.string(), [](char32_t c) {
           return u_isalpha(UChar32(c)) || u_isdigit(UChar32(c));
         }));
       }},
      {"isspace",
       [](Interpreter&, const Value& self, CallArgs& args) {
         return Value(AllChars(self.string(), [](char32_t c) { return text::IsSpace(c); }));
       }},
      {"islower", [](Interpreter&, const Value& self,
                     CallArgs& args) { return Value(text::IsLower(self.string())); }},
      {"isupper", [](Interpreter&, const Value& self,
                     CallArgs& args) { return Value(text::IsUpper(self.string())); }},
  };
  return *methods;
}

Array ItemPairs(const Object& o) {
  Array items;
  for (const auto& [k, v] : o.items()) items.push_back(Value::Tuple({k, v}));
  return items;
}

const std::vector<std::pair<std::string, Method>>& DictMethods() {
  static const auto* methods = new std::vector<std::pair<std::string, Method>>{
      {"items",
       [](Interpreter& in, const Value& self, CallArgs& args) {
         BindArgs(args, {}, "dict.items");
         in.CheckItems(self.object().size());
         return Value::List(ItemPairs(self.object()));
       }},
      {"keys",
       [](Interpreter& in, const Value& self, CallArgs& args) {
         BindArgs(args, {}, "dict.keys");
         in.CheckItems(self.object().size());
         Array keys;
         for (const auto& kv : self.object().items()) keys.push_back(kv.first);
         return Value::List(std::move(keys));
       }},
      {"values",
       [](Interpreter& in, const Value& self, CallArgs& args) {
         BindArgs(args, {}, "dict.values");
         in.CheckItems(self.object().size());
         Array values;
         for (const auto& kv : self.object().items()) values.push_back(kv.second);
         return Value::List(std::move(values));
       }},
      {"get",
       [](Interpreter&, const Value& self, CallArgs& args) {
         auto a = BindArgs(args, {"key", "default"}, "dict.get");
         if (!a[0]) ThrowRuntime("get expected at least 1 argument, got 0");
         const Value* v = self.object().Find(*a[0]);
         if (v != nullptr) return *v;
         return a[1] ? *a[1] : Value::None();
       }},
      {"copy", [](Interpreter&, const Value& self, CallArgs& args) { return self; }},
  };
  return *methods;
}

const std::vector<std::pair<std::string, Method>>& ListMethods() {
  static const auto* methods = new std::vector<std::pair<std::string, Method>>{
      {"index",
       [](Interpreter& in, const Value& self, CallArgs& args) {
         auto a = BindArgs(args, {"value"}, "list.index");
         in.Charge(int64_t(self.array().size()));
         for (size_t i = 0; i < self.array().size(); ++i) {
           if (a[0] && Equal(self.array()[i], *a[0])) return Value(int64_t(i));
         }
         ThrowRuntime(absl::StrCat(a[0] ? a[0]->Repr() : "value", " is not in list"));
       }},
      {"count",
       [](Interpreter& in, const Value& self, CallArgs& args) {
         auto a = BindArgs(args, {"value"}, "list.count");
         in.Charge(int64_t(self.array().size()));
         int64_t n = 0;
         for (const Value& v : self.array()) n += a[0] && Equal(v, *a[0]) ? 1 : 0;
         return Value(n);
       }},
  };
  return *methods;
}

// Methods that would modify their object: jinja2's ImmutableSandboxedEnvironment
// refuses them.
bool Modifies(const Value& obj, const std::string& name) {
  static constexpr std::string_view kList[] = {"append", "clear",  "extend",  "insert",
                                               "pop",    "remove", "reverse", "sort"};
  static constexpr std::string_view kDict[] = {"clear", "pop", "popitem", "setdefault", "update"};
  if (obj.kind() == Value::Kind::kList) {
    return std::find(std::begin(kList), std::end(kList), name) != std::end(kList);
  }
  if (obj.kind() == Value::Kind::kDict) {
    return std::find(std::begin(kDict), std::end(kDict), name) != std::end(kDict);
  }
  return false;
}

}  // namespace

std::shared_ptr<const Callable> MakeBuiltin(std::string name,
                                            std::function<Value(Interpreter&, CallArgs&)> fn) {
  return std::make_shared<Builtin>(std::move(name), std::move(fn));
}

std::vector<std::optional<Value>> BindArgs(const CallArgs& args,
                                           std::initializer_list<std::string_view> params,
                                           const std::string& what) {
  std::vector<std::optional<Value>> out(params.size());
  if (args.positional.size() > params.size()) {
    ThrowRuntime(absl::StrCat(what, "() takes at most ", params.size(), " argument(s) (",
                              args.positional.size(), " given)"));
  }
  for (size_t i = 0; i < args.positional.size(); ++i) out[i] = args.positional[i];
  for (const auto& [key, value] : args.keyword) {
    size_t i = 0;
    for (std::string_view p : params) {
      if (p == key) break;
      ++i;
    }
    if (i == params.size()) {
      ThrowRuntime(absl::StrCat(what, "() got an unexpected keyword argument '", key, "'"));
    }
    if (out[i]) ThrowRuntime(absl::StrCat(what, "() got multiple values for '", key, "'"));
    out[i] = value;
  }
  return out;
}

std::string StringArg(const std::optional<Value>& v, const std::string& what,
                      std::string fallback) {
  if (!v) return fallback;
  if (!v->is_string()) ThrowRuntime(absl::StrCat(what, " must be a string, not ", v->TypeName()));
  return v->string();
}

int64_t IntArg(const std::optional<Value>& v, const std::string& what, int64_t fallback) {
  if (!v || v->is_none()) return fallback;
  if (!v->is_integer()) {
    ThrowRuntime(absl::StrCat(what, " must be an integer, not ", v->TypeName()));
  }
  return v->integer();
}

bool BoolArg(const std::optional<Value>& v, bool fallback) { return v ? v->Truthy() : fallback; }

void AddGlobals(Scope* globals) {
  globals->Set("range", Value::Function(MakeBuiltin("range", Range)));
  globals->Set("namespace",
               Value::Function(MakeBuiltin("namespace", [](Interpreter& in, CallArgs& args) {
                 Value ns = Value::Namespace(AttributesOf(args, "namespace"));
                 in.TrackNamespace(ns);
                 return ns;
               })));
  globals->Set("dict", Value::Function(MakeBuiltin("dict", [](Interpreter&, CallArgs& args) {
                 return Value::Dict(AttributesOf(args, "dict"));
               })));
  globals->Set("raise_exception",
               Value::Function(MakeBuiltin("raise_exception", [](Interpreter&, CallArgs& args) {
                 auto a = BindArgs(args, {"message"}, "raise_exception");
                 throw TemplateError(ErrorKind::kRaised, a[0] ? a[0]->Str() : "");
                 return Value();
               })));
  globals->Set("strftime_now", Value::Function(MakeBuiltin("strftime_now", StrftimeNow)));
}

std::optional<Value> MethodOf(const Value& obj, const std::string& name) {
  if (Modifies(obj, name)) {
    return Value::Undefined(absl::StrCat("access to attribute '", name, "' of '", obj.TypeName(),
                                         "' object is unsafe."));
  }
  const std::vector<std::pair<std::string, Method>>* table = nullptr;
  if (obj.is_string()) table = &StringMethods();
  if (obj.kind() == Value::Kind::kDict) table = &DictMethods();
  if (obj.is_array()) table = &ListMethods();
  if (table == nullptr) return std::nullopt;
  for (const auto& [n, m] : *table) {
    if (n != name) continue;
    return Value::Function(MakeBuiltin(absl::StrCat(obj.TypeName(), ".", name),
                                       [self = obj, fn = &m](Interpreter& in, CallArgs& args) {
                                         in.ChargeBytes(self.string().size());
                                         return (*fn)(in, self, args);
                                       }));
  }
  return std::nullopt;
}

}  // namespace paged::jinja
