// The filters and tests of the subset, as jinja2 defines them (filters.py,
// tests.py), with transformers' tojson.
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "daemon/jinja/builtins.h"
#include "daemon/jinja/error.h"
#include "daemon/jinja/operators.h"
#include "daemon/jinja/text.h"

namespace paged::jinja {
namespace {

// Filters jinja2 has that the subset leaves out: an error when used.
constexpr std::string_view kUnsupportedFilters[] = {
    "batch",     "center",   "filesizeformat", "format", "groupby",   "pprint",   "random", "slice",
    "striptags", "truncate", "urlencode",      "urlize", "wordcount", "wordwrap", "xmlattr"};

// jinja2's make_attrgetter: "a.b.0" looks up a, then b, then item 0.
Value AttrPath(Interpreter& in, const Value& item, const std::optional<Value>& attribute) {
  if (!attribute || attribute->is_none()) return item;
  if (!attribute->is_string()) return GetItem(in, item, *attribute);
  Value v = item;
  for (const std::string& part : text::Split(attribute->string(), std::string("."), -1)) {
    const bool digits = !part.empty() && std::all_of(part.begin(), part.end(),
                                                     [](char c) { return c >= '0' && c <= '9'; });
    v = GetItem(in, v,
                digits ? Value(int64_t(std::strtoll(part.c_str(), nullptr, 10))) : Value(part));
  }
  return v;
}

Value IgnoreCase(const Value& v) { return v.is_string() ? Value(text::Lower(v.string())) : v; }

Value SortKey(Interpreter& in, const Value& item, const std::optional<Value>& attribute,
              bool case_sensitive) {
  Value k = AttrPath(in, item, attribute);
  return case_sensitive ? k : IgnoreCase(k);
}

Value Length(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return Value(0);
    case Value::Kind::kString:
      return Value(int64_t(text::Length(v.string())));
    case Value::Kind::kList:
    case Value::Kind::kTuple:
      return Value(int64_t(v.array().size()));
    case Value::Kind::kDict:
      return Value(int64_t(v.object().size()));
    default:
      ThrowRuntime(absl::StrCat("object of type '", v.TypeName(), "' has no len()"));
  }
}

// Python's int(str) / float(str): surrounding whitespace and '_' between
// digits allowed.
std::optional<int64_t> ParseInt(std::string s, int base) {
  s = text::Strip(s, std::nullopt, true, true);
  s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
  if (s.empty()) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, base);
  if (errno != 0 || *end != '\0') return std::nullopt;
  return int64_t(v);
}
std::optional<double> ParseFloat(std::string s) {
  s = text::Strip(s, std::nullopt, true, true);
  s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (*end != '\0') return std::nullopt;
  return v;
}

std::string HtmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// select / reject / selectattr / rejectattr.
Value SelectOrReject(Interpreter& in, const Value& value, CallArgs& args, bool select,
                     bool by_attribute, const std::string& name) {
  std::optional<Value> attribute;
  size_t off = 0;
  if (by_attribute) {
    if (args.positional.empty()) ThrowRuntime(name + ": missing parameter for attribute name");
    attribute = args.positional[0];
    off = 1;
  }
  std::optional<std::string> test;
  CallArgs test_args;
  if (args.positional.size() > off) {
    if (!args.positional[off].is_string()) ThrowRuntime(name + ": the test name must be a string");
    test = args.positional[off].string();
    test_args.positional.assign(args.positional.begin() + long(off) + 1, args.positional.end());
  }
  test_args.keyword = args.keyword;
  Array out;
  for (const Value& item : Iterate(in, value)) {
    const Value x = AttrPath(in, item, attribute);
    CallArgs a = test_args;
    const bool pass = test ? ApplyTest(in, *test, x, a) : x.Truthy();
    if (pass == select) out.push_back(item);
  }
  return Value::List(std::move(out));
}

Value MinOrMax(Interpreter& in, const Value& value, CallArgs& args, bool max) {
  auto a = BindArgs(args, {"case_sensitive", "attribute"}, max ? "max" : "min");
  const std::vector<Value> items = Iterate(in, value);
  if (items.empty()) return Value::Undefined("No aggregated item, sequence was empty.");
  const bool cs = BoolArg(a[0], false);
  size_t best = 0;
  Value best_key = SortKey(in, items[0], a[1], cs);
  for (size_t i = 1; i < items.size(); ++i) {
    Value k = SortKey(in, items[i], a[1], cs);
    const int c = Compare(k, best_key);
    if (max ? c > 0 : c < 0) {
      best = i;
      best_key = std::move(k);
    }
  }
  return items[best];
}

Value ToJsonFilter(Interpreter& in, const Value& value, CallArgs& args) {
  auto a = BindArgs(args, {"ensure_ascii", "indent", "separators", "sort_keys"}, "tojson");
  JsonFormat f;
  f.ensure_ascii = BoolArg(a[0], false);
  if (a[1] && !a[1]->is_none()) {
    if (a[1]->is_integer()) {
      f.indent = int(std::clamp<int64_t>(a[1]->integer(), 0, 64));
    } else {
      ThrowRuntime("tojson: indent must be an integer");
    }
  }
  if (a[2] && !a[2]->is_none()) {
    if (!a[2]->is_array() || a[2]->array().size() != 2 || !a[2]->array()[0].is_string() ||
        !a[2]->array()[1].is_string()) {
      ThrowRuntime("tojson: separators must be a pair of strings");
    }
    f.item_separator = a[2]->array()[0].string();
    f.key_separator = a[2]->array()[1].string();
    if (f.item_separator.empty() && f.indent >= 0) f.item_separator.assign(1, ',');
  }
  f.sort_keys = BoolArg(a[3], false);
  std::string out = ToJson(value, f);
  in.CheckString(out.size());
  in.ChargePrinted(out.size());
  return Value(std::move(out));
}

Value Indent(Interpreter& in, const Value& value, CallArgs& args) {
  auto a = BindArgs(args, {"width", "first", "blank"}, "indent");
  std::string pad = "    ";
  if (a[0])
    pad = a[0]->is_string()
              ? a[0]->string()
              : std::string(size_t(std::clamp<int64_t>(IntArg(a[0], "indent width", 4), 0, 1024)),
                            ' ');
  std::vector<std::string> lines = text::Split(value.Str() + "\n", std::string("\n"), -1);
  lines.pop_back();  // what follows the added newline
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i > 0) {
      out += "\n";
      if (!lines[i].empty() || BoolArg(a[2], false)) out += pad;
    }
    out += lines[i];
    in.CheckSize(out.size());
  }
  in.ChargeBytes(out.size());
  if (BoolArg(a[1], false)) out = pad + out;
  return Value(std::move(out));
}

Value Round(const Value& value, CallArgs& args) {
  auto a = BindArgs(args, {"precision", "method"}, "round");
  const int64_t precision = IntArg(a[0], "round precision", 0);
  const std::string method = StringArg(a[1], "round method", "common");
  if (!value.is_number())
    ThrowRuntime(absl::StrCat("type ", value.TypeName(), " doesn't define __round__"));
  const double scale = std::pow(10.0, double(precision));
  const double x = value.number() * scale;
  double r;
  if (method == "common") {
    r = std::nearbyint(x);  // Python's round(): halves to even
  } else if (method == "ceil") {
    r = std::ceil(x);
  } else if (method == "floor") {
    r = std::floor(x);
  } else {
    ThrowRuntime("method must be common, ceil or floor");
  }
  return Value(r / scale);
}

Value Sort(Interpreter& in, const Value& value, CallArgs& args) {
  auto a = BindArgs(args, {"reverse", "case_sensitive", "attribute"}, "sort");
  std::vector<Value> items = Iterate(in, value);
  const bool cs = BoolArg(a[1], false);
  std::vector<std::pair<Value, size_t>> keyed;
  for (size_t i = 0; i < items.size(); ++i) keyed.emplace_back(SortKey(in, items[i], a[2], cs), i);
  in.Charge(int64_t(items.size()) * 16);
  const bool reverse = BoolArg(a[0], false);
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    return reverse ? Compare(y.first, x.first) < 0 : Compare(x.first, y.first) < 0;
  });
  Array out;
  for (const auto& [k, i] : keyed) out.push_back(items[i]);
  return Value::List(std::move(out));
}

Value DictSort(Interpreter& in, const Value& value, CallArgs& args) {
  auto a = BindArgs(args, {"case_sensitive", "by", "reverse"}, "dictsort");
  if (value.kind() != Value::Kind::kDict) ThrowRuntime("dictsort: a mapping is required");
  const std::string by = StringArg(a[1], "dictsort by", "key");
  if (by != "key" && by != "value") ThrowRuntime("You can only sort by either 'key' or 'value'");
  const bool cs = BoolArg(a[0], false);
  const bool reverse = BoolArg(a[2], false);
  std::vector<std::pair<Value, Value>> items = value.object().items();
  in.Charge(int64_t(items.size()) * 16);
  std::stable_sort(items.begin(), items.end(), [&](const auto& x, const auto& y) {
    Value kx = by == "key" ? x.first : x.second;
    Value ky = by == "key" ? y.first : y.second;
    if (!cs) kx = IgnoreCase(kx), ky = IgnoreCase(ky);
    return reverse ? Compare(ky, kx) < 0 : Compare(kx, ky) < 0;
  });
  Array out;
  for (auto& [k, v] : items) out.push_back(Value::Tuple({k, v}));
  return Value::List(std::move(out));
}

Value Unique(Interpreter& in, const Value& value, CallArgs& args) {
  auto a = BindArgs(args, {"case_sensitive", "attribute"}, "unique");
  const bool cs = BoolArg(a[0], false);
  Array out;
  std::vector<Value> seen;
  for (const Value& item : Iterate(in, value)) {
    Value k = SortKey(in, item, a[1], cs);
    in.Charge(int64_t(seen.size()));
    if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return Equal(s, k); })) {
      seen.push_back(std::move(k));
      out.push_back(item);
    }
  }
  return Value::List(std::move(out));
}

Value Map(Interpreter& in, const Value& value, CallArgs& args) {
  const std::vector<Value> items = Iterate(in, value);
  Array out;
  if (args.positional.empty()) {
    auto a = BindArgs(args, {"attribute", "default"}, "map");
    if (!a[0]) ThrowRuntime("map: give an attribute or a filter name");
    for (const Value& item : items) {
      Value v = AttrPath(in, item, a[0]);
      if (v.is_undefined() && a[1]) v = *a[1];
      out.push_back(std::move(v));
    }
    return Value::List(std::move(out));
  }
  if (!args.positional[0].is_string()) ThrowRuntime("map: the filter name must be a string");
  const std::string name = args.positional[0].string();
  CallArgs rest;
  rest.positional.assign(args.positional.begin() + 1, args.positional.end());
  rest.keyword = args.keyword;
  for (const Value& item : items) {
    CallArgs a = rest;
    out.push_back(ApplyFilter(in, name, item, a));
  }
  return Value::List(std::move(out));
}

Value Sum(Interpreter& in, const Value& value, CallArgs& args) {
  auto a = BindArgs(args, {"attribute", "start"}, "sum");
  Value total = a[1] ? *a[1] : Value(0);
  for (const Value& item : Iterate(in, value))
    total = BinaryOp(in, "+", total, AttrPath(in, item, a[0]));
  return total;
}

Value Join(Interpreter& in, const Value& value, CallArgs& args) {
  auto a = BindArgs(args, {"d", "attribute"}, "join");
  const std::string sep = a[0] ? a[0]->Str() : "";
  std::string out;
  bool first = true;
  for (const Value& item : Iterate(in, value)) {
    if (!first) out += sep;
    first = false;
    const Value v = AttrPath(in, item, a[1]);
    if (v.is_string()) {
      out += v.string();
    } else {
      const std::string text = v.Str();
      in.ChargePrinted(text.size());
      out += text;
    }
    in.CheckSize(out.size());
  }
  in.ChargeBytes(out.size());
  return Value(std::move(out));
}

Value FirstOrLast(Interpreter& in, const Value& value, bool last) {
  const std::vector<Value> items = Iterate(in, value);
  if (items.empty()) {
    return Value::Undefined(last ? "No last item, sequence was empty."
                                 : "No first item, sequence was empty.");
  }
  return last ? items.back() : items.front();
}

}  // namespace

Value ApplyFilter(Interpreter& in, const std::string& name, const Value& value, CallArgs& args) {
  if (value.is_string()) in.ChargeBytes(value.string().size());
  auto no_args = [&] { BindArgs(args, {}, name); };
  if (name == "abs") {
    no_args();
    if (value.is_integer()) {
      if (value.integer() == INT64_MIN) ThrowRuntime("integer overflow");
      return Value(std::abs(value.integer()));
    }
    if (value.kind() == Value::Kind::kFloat) return Value(std::fabs(value.number()));
    if (value.is_undefined()) ThrowUndefined(value);
    ThrowRuntime(absl::StrCat("bad operand type for abs(): '", value.TypeName(), "'"));
  }
  if (name == "attr") {  // attributes only, never items
    auto a = BindArgs(args, {"name"}, name);
    const std::string attribute = StringArg(a[0], "attr name", "");
    if (value.is_undefined()) ThrowUndefined(value);
    if (std::optional<Value> m = MethodOf(value, attribute)) return *m;
    if (value.kind() == Value::Kind::kNamespace) return GetAttr(value, attribute);
    return Value::Undefined(
        absl::StrCat("'", value.TypeName(), " object' has no attribute '", attribute, "'"));
  }
  if (name == "capitalize") {
    no_args();
    return Value(text::Capitalize(value.Str()));
  }
  if (name == "count" || name == "length") {
    no_args();
    return Length(value);
  }
  if (name == "default" || name == "d") {
    auto a = BindArgs(args, {"default_value", "boolean"}, name);
    if (value.is_undefined() || (BoolArg(a[1], false) && !value.Truthy())) {
      return a[0] ? *a[0] : Value("");
    }
    return value;
  }
  if (name == "dictsort") return DictSort(in, value, args);
  if (name == "escape" || name == "e" || name == "forceescape") {
    no_args();
    return Value(HtmlEscape(value.Str()));
  }
  if (name == "first" || name == "last") {
    no_args();
    return FirstOrLast(in, value, name == "last");
  }
  if (name == "float") {
    auto a = BindArgs(args, {"default"}, name);
    const Value fallback = a[0] ? *a[0] : Value(0.0);
    if (value.is_number()) return Value(value.number());
    if (value.is_string()) {
      if (std::optional<double> d = ParseFloat(value.string())) return Value(*d);
    }
    return fallback;
  }
  if (name == "indent") return Indent(in, value, args);
  if (name == "int") {
    auto a = BindArgs(args, {"default", "base"}, name);
    const Value fallback = a[0] ? *a[0] : Value(0);
    if (value.is_integer()) return Value(value.integer());
    if (value.kind() == Value::Kind::kFloat) {
      if (!std::isfinite(value.number()) || std::fabs(value.number()) > 9.2e18) {
        ThrowRuntime("cannot convert float to integer");
      }
      return Value(int64_t(value.number()));
    }
    if (value.is_string()) {
      if (std::optional<int64_t> i = ParseInt(value.string(), int(IntArg(a[1], "base", 10)))) {
        return Value(*i);
      }
      if (std::optional<double> d = ParseFloat(value.string())) {
        if (std::isfinite(*d) && std::fabs(*d) < 9.2e18) return Value(int64_t(*d));
      }
    }
    return fallback;
  }
  if (name == "items") {
    no_args();
    if (value.is_undefined()) return Value::List({});
    if (value.kind() != Value::Kind::kDict) ThrowRuntime("Can only get item pairs from a mapping.");
    Array items;
    for (const auto& [k, v] : value.object().items()) items.push_back(Value::Tuple({k, v}));
    return Value::List(std::move(items));
  }
  if (name == "join") return Join(in, value, args);
  if (name == "list") {
    no_args();
    return Value::List(Iterate(in, value));
  }
  if (name == "lower") {
    no_args();
    return Value(text::Lower(value.Str()));
  }
  if (name == "map") return Map(in, value, args);
  if (name == "max" || name == "min") return MinOrMax(in, value, args, name == "max");
  if (name == "reject" || name == "select") {
    return SelectOrReject(in, value, args, name == "select", false, name);
  }
  if (name == "rejectattr" || name == "selectattr") {
    return SelectOrReject(in, value, args, name == "selectattr", true, name);
  }
  if (name == "replace") {
    auto a = BindArgs(args, {"old", "new", "count"}, name);
    if (!a[0] || !a[1]) ThrowRuntime("replace() takes old and new");
    std::string out =
        text::Replace(value.Str(), a[0]->Str(), a[1]->Str(), IntArg(a[2], "replace count", -1));
    in.CheckString(out.size());
    return Value(std::move(out));
  }
  if (name == "reverse") {
    no_args();
    if (value.is_string()) {
      std::vector<char32_t> cps = text::Decode(value.string());
      std::reverse(cps.begin(), cps.end());
      return Value(text::Encode(cps));
    }
    std::vector<Value> items = Iterate(in, value);
    std::reverse(items.begin(), items.end());
    return Value::List(std::move(items));
  }
  if (name == "round") return Round(value, args);
  if (name == "safe") {
    no_args();
    return value;
  }
  if (name == "sort") return Sort(in, value, args);
  if (name == "string") {
    no_args();
    if (value.is_string()) return value;
    std::string text = value.Str();
    in.CheckString(text.size());
    in.ChargePrinted(text.size());
    return Value(std::move(text));
  }
  if (name == "sum") return Sum(in, value, args);
  if (name == "title") {
    no_args();
    return Value(text::TitleFilter(value.Str()));
  }
  if (name == "tojson") return ToJsonFilter(in, value, args);
  if (name == "trim") {
    auto a = BindArgs(args, {"chars"}, name);
    std::optional<std::string> chars;
    if (a[0] && !a[0]->is_none()) chars = a[0]->Str();
    return Value(text::Strip(value.Str(), chars, true, true));
  }
  if (name == "unique") return Unique(in, value, args);
  if (name == "upper") {
    no_args();
    return Value(text::Upper(value.Str()));
  }
  if (std::find(std::begin(kUnsupportedFilters), std::end(kUnsupportedFilters), name) !=
      std::end(kUnsupportedFilters)) {
    ThrowRuntime(absl::StrCat("the filter '", name, "' is not supported"));
  }
  ThrowRuntime(absl::StrCat("no filter named '", name, "'"));
}

bool ApplyTest(Interpreter& in, const std::string& name, const Value& value, CallArgs& args) {
  using K = Value::Kind;
  auto one = [&]() -> Value {
    auto a = BindArgs(args, {"other"}, name);
    if (!a[0]) ThrowRuntime(absl::StrCat("the test '", name, "' takes an argument"));
    return *a[0];
  };
  auto no_args = [&] { BindArgs(args, {}, name); };
  if (name == "defined" || name == "undefined") {
    no_args();
    return value.is_undefined() == (name == "undefined");
  }
  if (name == "none") return no_args(), value.is_none();
  if (name == "boolean") return no_args(), value.kind() == K::kBool;
  if (name == "true") return no_args(), value.kind() == K::kBool && value.boolean();
  if (name == "false") return no_args(), value.kind() == K::kBool && !value.boolean();
  if (name == "integer") return no_args(), value.kind() == K::kInt;
  if (name == "float") return no_args(), value.kind() == K::kFloat;
  if (name == "number") return no_args(), value.is_number();
  if (name == "string") return no_args(), value.is_string();
  if (name == "mapping") return no_args(), value.kind() == K::kDict;
  if (name == "iterable" || name == "sequence") {
    no_args();
    return value.is_undefined() || value.is_string() || value.is_array() ||
           value.kind() == K::kDict;
  }
  if (name == "callable") return no_args(), value.kind() == K::kCallable;
  if (name == "escaped") return no_args(), false;
  if (name == "sameas") {
    const Value other = one();
    if (value.kind() != other.kind()) return false;
    if (value.identity() != nullptr) return value.identity() == other.identity();
    return Equal(value, other);
  }
  if (name == "eq" || name == "equalto" || name == "==") return CompareOp(in, "==", value, one());
  if (name == "ne" || name == "!=") return CompareOp(in, "!=", value, one());
  if (name == "lt" || name == "lessthan" || name == "<") return CompareOp(in, "<", value, one());
  if (name == "le" || name == "<=") return CompareOp(in, "<=", value, one());
  if (name == "gt" || name == "greaterthan" || name == ">") return CompareOp(in, ">", value, one());
  if (name == "ge" || name == ">=") return CompareOp(in, ">=", value, one());
  if (name == "in") return Contains(in, one(), value);
  if (name == "divisibleby") {
    const Value n = one();
    return BinaryOp(in, "%", value, n).number() == 0;
  }
  if (name == "even" || name == "odd") {
    no_args();
    if (!value.is_integer()) ThrowRuntime(absl::StrCat("the test '", name, "' takes an integer"));
    return (value.integer() % 2 == 0) == (name == "even");
  }
  if (name == "lower") return no_args(), text::IsLower(value.Str());
  if (name == "upper") return no_args(), text::IsUpper(value.Str());
  if (name == "filter" || name == "test") {  // whether the value names one
    no_args();
    const Value& n = value;
    if (!n.is_string()) return false;
    static constexpr std::string_view kFilters[] = {
        "abs",    "attr",   "capitalize",  "count",      "default", "d",       "dictsort",
        "escape", "e",      "forceescape", "first",      "float",   "indent",  "int",
        "items",  "join",   "last",        "length",     "list",    "lower",   "map",
        "max",    "min",    "reject",      "rejectattr", "replace", "reverse", "round",
        "safe",   "select", "selectattr",  "sort",       "string",  "sum",     "title",
        "tojson", "trim",   "unique",      "upper"};
    static constexpr std::string_view kTests[] = {
        "defined", "undefined", "none",        "boolean", "true",     "false",       "integer",
        "float",   "number",    "string",      "mapping", "iterable", "sequence",    "callable",
        "escaped", "sameas",    "eq",          "equalto", "ne",       "lt",          "lessthan",
        "le",      "gt",        "greaterthan", "ge",      "in",       "divisibleby", "even",
        "odd",     "lower",     "upper",       "filter",  "test",     "==",          "!=",
        "<",       "<=",        ">",           ">="};
    const std::string& s = n.string();
    if (name == "filter")
      return std::find(std::begin(kFilters), std::end(kFilters), s) != std::end(kFilters);
    return std::find(std::begin(kTests), std::end(kTests), s) != std::end(kTests);
  }
  ThrowRuntime(absl::StrCat("no test named '", name, "'"));
}

}  // namespace paged::jinja
