#include "daemon/jinja/operators.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "daemon/jinja/builtins.h"
#include "daemon/jinja/error.h"
#include "daemon/jinja/interpreter.h"
#include "daemon/jinja/text.h"

namespace paged::jinja {
namespace {

[[noreturn]] void Unsupported(const std::string& op, const Value& a, const Value& b) {
  ThrowRuntime(absl::StrCat("unsupported operand type(s) for ", op, ": '", a.TypeName(), "' and '",
                            b.TypeName(), "'"));
}

void CheckOverflow(bool overflow) {
  if (overflow) ThrowRuntime("integer overflow");
}

// Python's floor division and modulo of integers.
int64_t FloorDiv(int64_t a, int64_t b) {
  if (b == 0) ThrowRuntime("integer division or modulo by zero");
  if (a == INT64_MIN && b == -1) ThrowRuntime("integer overflow");
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}
int64_t FloorMod(int64_t a, int64_t b) {
  if (b == 0) ThrowRuntime("integer division or modulo by zero");
  if (b == -1) return 0;
  int64_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

Value Repeat(Interpreter& in, const Value& seq, int64_t n) {
  if (seq.is_string()) {
    if (n <= 0 || seq.string().empty()) return Value("");
    in.CheckString(seq.string().size() * size_t(n));
    std::string out;
    out.reserve(seq.string().size() * size_t(n));
    for (int64_t i = 0; i < n; ++i) out += seq.string();
    return Value(std::move(out));
  }
  Array items;
  if (n > 0 && !seq.array().empty()) {
    in.CheckItems(seq.array().size() * size_t(n));
    for (int64_t i = 0; i < n; ++i)
      items.insert(items.end(), seq.array().begin(), seq.array().end());
  }
  return seq.kind() == Value::Kind::kList ? Value::List(std::move(items))
                                          : Value::Tuple(std::move(items));
}

Value CharAt(const std::vector<char32_t>& cps, size_t i) {
  std::string s;
  text::AppendUtf8(cps[i], &s);
  return Value(std::move(s));
}

// Python's printf-style `text % args`: %s %r %d %i %f %e %g %x %o and %%,
// with flags, width and precision.
Value Format(Interpreter& in, const std::string& format, const Value& args) {
  std::vector<Value> values;
  if (args.kind() == Value::Kind::kTuple) {
    values = args.array();
  } else {
    values.push_back(args);
  }
  size_t next = 0;
  std::string out;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') {
      out += format[i];
      continue;
    }
    size_t j = i + 1;
    std::string spec = "%";
    while (j < format.size() && std::string_view("-+ #0").find(format[j]) != std::string_view::npos)
      spec += format[j++];
    while (j < format.size() && format[j] >= '0' && format[j] <= '9') spec += format[j++];
    if (j < format.size() && format[j] == '.') {
      spec += format[j++];
      while (j < format.size() && format[j] >= '0' && format[j] <= '9') spec += format[j++];
    }
    if (j >= format.size()) ThrowRuntime("incomplete format");
    const char conv = format[j];
    i = j;
    if (conv == '%') {
      out += '%';
      continue;
    }
    if (next >= values.size()) ThrowRuntime("not enough arguments for format string");
    const Value& v = values[next++];
    char buf[512];
    if (conv == 's' || conv == 'r') {
      const std::string text = conv == 's' ? v.Str() : v.Repr();
      if (spec == "%") {
        out += text;
      } else {
        // Width and precision count code points in Python; bytes here.
        const std::string f = spec + "s";
        const int n = std::snprintf(nullptr, 0, f.c_str(), text.c_str());
        std::string tmp(size_t(std::max(n, 0)) + 1, '\0');
        std::snprintf(tmp.data(), tmp.size(), f.c_str(), text.c_str());
        tmp.resize(size_t(std::max(n, 0)));
        out += tmp;
      }
    } else if (conv == 'd' || conv == 'i' || conv == 'x' || conv == 'X' || conv == 'o') {
      if (!v.is_number()) {
        ThrowRuntime(absl::StrCat("%", std::string(1, conv), " format: a number is required, not ",
                                  v.TypeName()));
      }
      const long long n = v.is_integer() ? v.integer() : (long long)(v.number());
      std::snprintf(buf, sizeof(buf),
                    (spec + (conv == 'i' ? "lld" : std::string("ll") + conv)).c_str(), n);
      out += buf;
    } else if (std::string_view("eEfFgG").find(conv) != std::string_view::npos) {
      if (!v.is_number()) {
        ThrowRuntime(absl::StrCat("must be real number, not ", v.TypeName()));
      }
      std::snprintf(buf, sizeof(buf), (spec + conv).c_str(), v.number());
      out += buf;
    } else {
      ThrowRuntime(absl::StrCat("unsupported format character '", std::string(1, conv), "'"));
    }
    in.CheckSize(out.size());
  }
  in.ChargePrinted(out.size());
  if (next < values.size() && args.kind() == Value::Kind::kTuple) {
    ThrowRuntime("not all arguments converted during string formatting");
  }
  return Value(std::move(out));
}

}  // namespace

void ThrowUndefined(const Value& v) {
  throw TemplateError(ErrorKind::kUndefined, v.string().empty() ? "undefined value" : v.string());
}

Value BinaryOp(Interpreter& in, const std::string& op, const Value& a, const Value& b) {
  if (op == "~") {
    std::string out = a.Str();
    const std::string right = b.Str();
    in.CheckString(out.size() + right.size());
    out += right;
    return Value(std::move(out));
  }
  if (a.is_undefined()) ThrowUndefined(a);
  if (b.is_undefined()) ThrowUndefined(b);
  const bool ints = a.is_integer() && b.is_integer();
  const bool nums = a.is_number() && b.is_number();
  if (op == "+") {
    if (ints) {
      int64_t r = 0;
      CheckOverflow(__builtin_add_overflow(a.integer(), b.integer(), &r));
      return Value(r);
    }
    if (nums) return Value(a.number() + b.number());
    if (a.is_string() && b.is_string()) {
      in.CheckString(a.string().size() + b.string().size());
      return Value(a.string() + b.string());
    }
    if (a.is_array() && a.kind() == b.kind()) {
      in.CheckItems(a.array().size() + b.array().size());
      Array items = a.array();
      items.insert(items.end(), b.array().begin(), b.array().end());
      return a.kind() == Value::Kind::kList ? Value::List(std::move(items))
                                            : Value::Tuple(std::move(items));
    }
    if (a.is_string() || a.is_array()) {
      ThrowRuntime(absl::StrCat("can only concatenate ", a.TypeName(), " (not \"", b.TypeName(),
                                "\") to ", a.TypeName()));
    }
    Unsupported(op, a, b);
  }
  if (op == "-") {
    if (ints) {
      int64_t r = 0;
      CheckOverflow(__builtin_sub_overflow(a.integer(), b.integer(), &r));
      return Value(r);
    }
    if (nums) return Value(a.number() - b.number());
    Unsupported(op, a, b);
  }
  if (op == "*") {
    if (ints) {
      int64_t r = 0;
      CheckOverflow(__builtin_mul_overflow(a.integer(), b.integer(), &r));
      return Value(r);
    }
    if (nums) return Value(a.number() * b.number());
    if ((a.is_string() || a.is_array()) && b.is_integer()) return Repeat(in, a, b.integer());
    if ((b.is_string() || b.is_array()) && a.is_integer()) return Repeat(in, b, a.integer());
    Unsupported(op, a, b);
  }
  if (op == "/") {
    if (!nums) Unsupported(op, a, b);
    if (b.number() == 0) ThrowRuntime("division by zero");
    return Value(a.number() / b.number());
  }
  if (op == "//") {
    if (ints) return Value(FloorDiv(a.integer(), b.integer()));
    if (!nums) Unsupported(op, a, b);
    if (b.number() == 0) ThrowRuntime("float floor division by zero");
    return Value(std::floor(a.number() / b.number()));
  }
  if (op == "%") {
    if (ints) return Value(FloorMod(a.integer(), b.integer()));
    if (a.is_string()) return Format(in, a.string(), b);
    if (!nums) Unsupported(op, a, b);
    if (b.number() == 0) ThrowRuntime("float modulo");
    double r = std::fmod(a.number(), b.number());
    if (r != 0 && ((r < 0) != (b.number() < 0))) r += b.number();
    return Value(r);
  }
  if (op == "**") {
    if (ints && b.integer() >= 0) {
      int64_t result = 1;
      int64_t base = a.integer();
      for (int64_t e = b.integer(); e > 0; e >>= 1) {
        if (e & 1) CheckOverflow(__builtin_mul_overflow(result, base, &result));
        if (e > 1) CheckOverflow(__builtin_mul_overflow(base, base, &base));
      }
      return Value(result);
    }
    if (!nums) Unsupported(op, a, b);
    return Value(std::pow(a.number(), b.number()));
  }
  ThrowRuntime("unknown operator " + op);
}

Value Negate(const Value& v) {
  if (v.is_undefined()) ThrowUndefined(v);
  if (v.is_integer()) {
    if (v.integer() == INT64_MIN) ThrowRuntime("integer overflow");
    return Value(-v.integer());
  }
  if (v.kind() == Value::Kind::kFloat) return Value(-v.number());
  ThrowRuntime(absl::StrCat("bad operand type for unary -: '", v.TypeName(), "'"));
}

Value UnaryPlus(const Value& v) {
  if (v.is_undefined()) ThrowUndefined(v);
  if (v.is_integer()) return Value(v.integer());
  if (v.kind() == Value::Kind::kFloat) return v;
  ThrowRuntime(absl::StrCat("bad operand type for unary +: '", v.TypeName(), "'"));
}

bool CompareOp(Interpreter& in, const std::string& op, const Value& a, const Value& b) {
  in.ChargeBytes((a.is_string() ? a.string().size() : 0) + (b.is_string() ? b.string().size() : 0));
  if (op == "==") return Equal(a, b);
  if (op == "!=") return !Equal(a, b);
  if (op == "in") return Contains(in, b, a);
  if (op == "not in") return !Contains(in, b, a);
  const int c = Compare(a, b);
  if (op == "<") return c < 0;
  if (op == "<=") return c <= 0;
  if (op == ">") return c > 0;
  if (op == ">=") return c >= 0;
  ThrowRuntime("unknown comparison " + op);
}

bool Contains(Interpreter& in, const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::kUndefined:
      return false;
    case Value::Kind::kString:
      if (!item.is_string()) {
        ThrowRuntime(
            absl::StrCat("'in <string>' requires string as left operand, not ", item.TypeName()));
      }
      return container.string().find(item.string()) != std::string::npos;
    case Value::Kind::kList:
    case Value::Kind::kTuple:
      in.Charge(int64_t(container.array().size()));
      for (const Value& v : container.array()) {
        if (Equal(v, item)) return true;
      }
      return false;
    case Value::Kind::kDict:
      return container.object().Find(item) != nullptr;
    default:
      ThrowRuntime(absl::StrCat("argument of type '", container.TypeName(), "' is not iterable"));
  }
}

std::vector<Value> Iterate(Interpreter& in, const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return {};
    case Value::Kind::kList:
    case Value::Kind::kTuple:
      in.Charge(int64_t(v.array().size()));
      return v.array();
    case Value::Kind::kString: {
      std::vector<Value> out;
      const std::vector<char32_t> cps = text::Decode(v.string());
      in.CheckItems(cps.size());
      for (size_t i = 0; i < cps.size(); ++i) out.push_back(CharAt(cps, i));
      return out;
    }
    case Value::Kind::kDict: {
      in.Charge(int64_t(v.object().size()));
      std::vector<Value> out;
      for (const auto& kv : v.object().items()) out.push_back(kv.first);
      return out;
    }
    default:
      ThrowRuntime(absl::StrCat("'", v.TypeName(), "' object is not iterable"));
  }
}

namespace {

std::string TypeRepr(const Value& obj) {
  if (obj.is_none()) return "None";
  return absl::StrCat(obj.TypeName(), " object");
}

Value NoAttribute(const Value& obj, const std::string& name) {
  return Value::Undefined(absl::StrCat("'", TypeRepr(obj), "' has no attribute '", name, "'"));
}

}  // namespace

Value GetAttr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) ThrowUndefined(obj);
  if (std::optional<Value> m = MethodOf(obj, name)) return *m;
  if (obj.kind() == Value::Kind::kDict || obj.kind() == Value::Kind::kNamespace) {
    if (const Value* v = obj.object().Find(std::string_view(name))) return *v;
  }
  return NoAttribute(obj, name);
}

Value GetItem(Interpreter& in, const Value& obj, const Value& key) {
  switch (obj.kind()) {
    case Value::Kind::kUndefined:
      ThrowUndefined(obj);
    case Value::Kind::kDict:
      if (const Value* v = obj.object().Find(key)) return *v;
      break;
    case Value::Kind::kList:
    case Value::Kind::kTuple:
      if (key.is_integer()) {
        const int64_t n = int64_t(obj.array().size());
        int64_t i = key.integer();
        if (i < 0) i += n;
        if (i >= 0 && i < n) return obj.array()[size_t(i)];
        return Value::Undefined(
            absl::StrCat("'", TypeRepr(obj), "' has no element ", key.integer()));
      }
      break;
    case Value::Kind::kString:
      if (key.is_integer()) {
        in.ChargeBytes(obj.string().size());
        const std::vector<char32_t> cps = text::Decode(obj.string());
        const int64_t n = int64_t(cps.size());
        int64_t i = key.integer();
        if (i < 0) i += n;
        if (i >= 0 && i < n) return CharAt(cps, size_t(i));
        return Value::Undefined(absl::StrCat("'str object' has no element ", key.integer()));
      }
      break;
    default:
      break;
  }
  // jinja2 falls back to the attribute of that name.
  if (key.is_string()) return GetAttr(obj, key.string());
  return Value::Undefined(absl::StrCat("'", TypeRepr(obj), "' has no element ", key.Repr()));
}

Value SliceOf(Interpreter& in, const Value& obj, std::optional<int64_t> start,
              std::optional<int64_t> stop, std::optional<int64_t> step) {
  if (obj.is_undefined()) ThrowUndefined(obj);
  if (obj.is_string()) {
    in.ChargeBytes(obj.string().size());
    const std::vector<char32_t> cps = text::Decode(obj.string());
    std::vector<char32_t> out;
    for (int64_t i : text::SliceIndices(int64_t(cps.size()), start, stop, step)) {
      out.push_back(cps[size_t(i)]);
    }
    in.ChargeBytes(out.size());
    return Value(text::Encode(out));
  }
  if (obj.is_array()) {
    Array out;
    for (int64_t i : text::SliceIndices(int64_t(obj.array().size()), start, stop, step)) {
      out.push_back(obj.array()[size_t(i)]);
    }
    in.CheckItems(out.size());
    return obj.kind() == Value::Kind::kList ? Value::List(std::move(out))
                                            : Value::Tuple(std::move(out));
  }
  return Value::Undefined(absl::StrCat("'", TypeRepr(obj), "' cannot be sliced"));
}

}  // namespace paged::jinja
