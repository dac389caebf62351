#include "daemon/jinja/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "daemon/jinja/error.h"
#include "daemon/jinja/text.h"

namespace paged::jinja {
namespace {

// Printing, comparing and serializing recurse into containers; a namespace
// can hold itself, so the recursion is bounded.
constexpr int kMaxNesting = 256;

void CheckDepth(int depth) {
  if (depth > kMaxNesting) {
    throw TemplateError(ErrorKind::kLimit,
                        absl::StrCat("a value nested over ", kMaxNesting, " levels deep"));
  }
}

std::string Print(const Value& v, bool repr, int depth);

std::string PrintItems(const Array& items, const char* open, const char* close, bool tuple,
                       int depth) {
  std::string out = open;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ", ";
    out += Print(items[i], true, depth + 1);
  }
  if (tuple && items.size() == 1) out += ",";
  out += close;
  return out;
}

std::string PrintDict(const Object& o, int depth) {
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : o.items()) {
    if (!first) out += ", ";
    first = false;
    absl::StrAppend(&out, Print(k, true, depth + 1), ": ", Print(v, true, depth + 1));
  }
  out += "}";
  return out;
}

std::string Print(const Value& v, bool repr, int depth) {
  CheckDepth(depth);
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return repr ? "Undefined" : "";
    case Value::Kind::kNone:
      return "None";
    case Value::Kind::kBool:
      return v.boolean() ? "True" : "False";
    case Value::Kind::kInt:
      return std::to_string(v.integer());
    case Value::Kind::kFloat:
      return FormatFloat(v.number());
    case Value::Kind::kString:
      return repr ? text::Repr(v.string()) : v.string();
    case Value::Kind::kList:
      return PrintItems(v.array(), "[", "]", false, depth);
    case Value::Kind::kTuple:
      return PrintItems(v.array(), "(", ")", true, depth);
    case Value::Kind::kDict:
      return PrintDict(v.object(), depth);
    case Value::Kind::kNamespace:
      return "<Namespace " + PrintDict(v.object(), depth) + ">";
    case Value::Kind::kCallable:
      return "<function " + v.callable().name() + ">";
  }
  return "";
}

bool EqualAt(const Value& a, const Value& b, int depth) {
  CheckDepth(depth);
  if (a.is_number() && b.is_number()) {
    if (a.is_integer() && b.is_integer()) return a.integer() == b.integer();
    return a.number() == b.number();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return true;
    case Value::Kind::kString:
      return a.string() == b.string();
    case Value::Kind::kList:
    case Value::Kind::kTuple: {
      const Array& x = a.array();
      const Array& y = b.array();
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i) {
        if (!EqualAt(x[i], y[i], depth + 1)) return false;
      }
      return true;
    }
    case Value::Kind::kDict: {
      const Object& x = a.object();
      const Object& y = b.object();
      if (x.size() != y.size()) return false;
      for (const auto& [k, v] : x.items()) {
        const Value* w = y.Find(k);
        if (w == nullptr || !EqualAt(v, *w, depth + 1)) return false;
      }
      return true;
    }
    default:  // namespaces and callables: identity
      return a.identity() == b.identity();
  }
}

[[noreturn]] void NotOrderable(const Value& a, const Value& b) {
  if (a.is_undefined()) throw TemplateError(ErrorKind::kUndefined, a.string());
  if (b.is_undefined()) throw TemplateError(ErrorKind::kUndefined, b.string());
  ThrowRuntime(absl::StrCat("'<' not supported between instances of '", a.TypeName(), "' and '",
                            b.TypeName(), "'"));
}

int CompareAt(const Value& a, const Value& b, int depth) {
  CheckDepth(depth);
  if (a.is_number() && b.is_number()) {
    if (a.is_integer() && b.is_integer()) {
      return a.integer() < b.integer() ? -1 : a.integer() > b.integer() ? 1 : 0;
    }
    const double x = a.number();
    const double y = b.number();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    const int c = a.string().compare(b.string());
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.is_array() && a.kind() == b.kind()) {
    const Array& x = a.array();
    const Array& y = b.array();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (!EqualAt(x[i], y[i], depth + 1)) return CompareAt(x[i], y[i], depth + 1);
    }
    return x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0;
  }
  NotOrderable(a, b);
}

void JsonAt(const Value& v, const JsonFormat& f, int depth, std::string* out) {
  CheckDepth(depth);
  const std::string item_sep =
      !f.item_separator.empty() ? f.item_separator : (f.indent >= 0 ? "," : ", ");
  auto newline = [&](int level) {
    if (f.indent < 0) return;
    *out += '\n';
    out->append(size_t(f.indent) * size_t(level), ' ');
  };
  switch (v.kind()) {
    case Value::Kind::kNone:
      *out += "null";
      return;
    case Value::Kind::kBool:
      *out += v.boolean() ? "true" : "false";
      return;
    case Value::Kind::kInt:
      *out += std::to_string(v.integer());
      return;
    case Value::Kind::kFloat: {
      const double d = v.number();
      if (std::isnan(d)) {
        *out += "NaN";
      } else if (std::isinf(d)) {
        *out += d > 0 ? "Infinity" : "-Infinity";
      } else {
        *out += FormatFloat(d);
      }
      return;
    }
    case Value::Kind::kString:
      *out += text::JsonQuote(v.string(), f.ensure_ascii);
      return;
    case Value::Kind::kList:
    case Value::Kind::kTuple: {
      const Array& items = v.array();
      if (items.empty()) {
        *out += "[]";
        return;
      }
      *out += '[';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) *out += item_sep;
        newline(depth + 1);
        JsonAt(items[i], f, depth + 1, out);
      }
      newline(depth);
      *out += ']';
      return;
    }
    case Value::Kind::kDict: {
      std::vector<const std::pair<Value, Value>*> items;
      for (const auto& kv : v.object().items()) items.push_back(&kv);
      if (items.empty()) {
        *out += "{}";
        return;
      }
      auto key_text = [](const Value& k) -> std::string {
        switch (k.kind()) {
          case Value::Kind::kString:
            return k.string();
          case Value::Kind::kNone:
            return "null";
          case Value::Kind::kBool:
            return k.boolean() ? "true" : "false";
          case Value::Kind::kInt:
            return std::to_string(k.integer());
          case Value::Kind::kFloat:
            return FormatFloat(k.number());
          default:
            ThrowRuntime(
                absl::StrCat("keys must be str, int, float, bool or None, not ", k.TypeName()));
        }
      };
      if (f.sort_keys) {
        std::stable_sort(items.begin(), items.end(), [&](const auto* x, const auto* y) {
          return Compare(x->first, y->first) < 0;
        });
      }
      *out += '{';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) *out += item_sep;
        newline(depth + 1);
        *out += text::JsonQuote(key_text(items[i]->first), f.ensure_ascii);
        *out += f.key_separator;
        JsonAt(items[i]->second, f, depth + 1, out);
      }
      newline(depth);
      *out += '}';
      return;
    }
    default:
      ThrowRuntime(absl::StrCat("Object of type ", v.TypeName(), " is not JSON serializable"));
  }
}

}  // namespace

Value::Value(std::string v)
    : kind_(Kind::kString), s_(std::make_shared<const std::string>(std::move(v))) {}

const std::string& Value::Empty() {
  static const std::string* empty = new std::string;
  return *empty;
}

Value Value::Undefined(std::string hint) {
  Value v;
  v.s_ = std::make_shared<const std::string>(std::move(hint));
  return v;
}

Value Value::None() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}

Value Value::Int(int64_t i) { return Value(i); }

Value Value::List(Array items) {
  Value v;
  v.kind_ = Kind::kList;
  v.array_ = std::make_shared<const Array>(std::move(items));
  return v;
}

Value Value::Tuple(Array items) {
  Value v = List(std::move(items));
  v.kind_ = Kind::kTuple;
  return v;
}

Value Value::Dict(Object items) {
  Value v;
  v.kind_ = Kind::kDict;
  v.object_ = std::make_shared<Object>(std::move(items));
  return v;
}

Value Value::Namespace(Object attributes) {
  Value v = Dict(std::move(attributes));
  v.kind_ = Kind::kNamespace;
  return v;
}

Value Value::Function(std::shared_ptr<const Callable> f) {
  Value v;
  v.kind_ = Kind::kCallable;
  v.callable_ = std::move(f);
  return v;
}

const void* Value::identity() const {
  if (array_) return array_.get();
  if (object_) return object_.get();
  if (callable_) return callable_.get();
  return nullptr;
}

bool Value::Truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return b_;
    case Kind::kInt:
      return i_ != 0;
    case Kind::kFloat:
      return f_ != 0;
    case Kind::kString:
      return !string().empty();
    case Kind::kList:
    case Kind::kTuple:
      return !array_->empty();
    case Kind::kDict:
      return object_->size() != 0;
    case Kind::kNamespace:
    case Kind::kCallable:
      return true;
  }
  return false;
}

std::string Value::Str() const { return Print(*this, false, 0); }
std::string Value::Repr() const { return Print(*this, true, 0); }

const char* Value::TypeName() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "Undefined";
    case Kind::kNone:
      return "NoneType";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kList:
      return "list";
    case Kind::kTuple:
      return "tuple";
    case Kind::kDict:
      return "dict";
    case Kind::kNamespace:
      return "Namespace";
    case Kind::kCallable:
      return "function";
  }
  return "?";
}

Object::Object(std::vector<std::pair<Value, Value>> items) {
  for (auto& [k, v] : items) Set(std::move(k), std::move(v));
}

const Value* Object::Find(const Value& key) const {
  for (const auto& [k, v] : items_) {
    if (Equal(k, key)) return &v;
  }
  return nullptr;
}

const Value* Object::Find(std::string_view key) const {
  for (const auto& [k, v] : items_) {
    if (k.is_string() && k.string() == key) return &v;
  }
  return nullptr;
}

void Object::Set(Value key, Value value) {
  for (auto& [k, v] : items_) {
    if (Equal(k, key)) {
      v = std::move(value);
      return;
    }
  }
  items_.emplace_back(std::move(key), std::move(value));
}

bool Equal(const Value& a, const Value& b) { return EqualAt(a, b, 0); }
int Compare(const Value& a, const Value& b) { return CompareAt(a, b, 0); }

std::string FormatFloat(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  std::string_view sci(buf, size_t(r.ptr - buf));  // "-d.ddde+XX"
  std::string sign;
  if (!sci.empty() && sci[0] == '-') {
    sign = "-";
    sci.remove_prefix(1);
  }
  const size_t e_at = sci.find('e');
  std::string digits;
  for (char c : sci.substr(0, e_at)) {
    if (c != '.') digits += c;
  }
  const int exp = std::stoi(std::string(sci.substr(e_at + 1)));
  if (exp < -4 || exp >= 16) {
    std::string out = sign + digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char e[16];
    std::snprintf(e, sizeof(e), "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    return out + e;
  }
  if (exp < 0) return sign + "0." + std::string(size_t(-exp - 1), '0') + digits;
  const size_t int_len = size_t(exp) + 1;
  if (digits.size() <= int_len) {
    return sign + digits + std::string(int_len - digits.size(), '0') + ".0";
  }
  return sign + digits.substr(0, int_len) + "." + digits.substr(int_len);
}

std::string ToJson(const Value& v, const JsonFormat& format) {
  std::string out;
  JsonAt(v, format, 0, &out);
  return out;
}

Value FromJson(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return Value::None();
    case nlohmann::json::value_t::boolean:
      return Value(j.get<bool>());
    case nlohmann::json::value_t::number_integer:
      return Value(j.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      if (u > uint64_t(INT64_MAX)) return Value(double(u));
      return Value(int64_t(u));
    }
    case nlohmann::json::value_t::number_float:
      return Value(j.get<double>());
    case nlohmann::json::value_t::string:
      return Value(j.get<std::string>());
    case nlohmann::json::value_t::array: {
      Array items;
      for (const auto& e : j) items.push_back(FromJson(e));
      return Value::List(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      Object o;
      for (auto it = j.begin(); it != j.end(); ++it) o.Set(Value(it.key()), FromJson(it.value()));
      return Value::Dict(std::move(o));
    }
    default:
      return Value::None();
  }
}

}  // namespace paged::jinja
