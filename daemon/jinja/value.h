// The values a template computes with, modelled on the Python objects jinja2
// works on: str, int, float, bool, None, list, tuple, dict, jinja2's
// Undefined and Namespace, and callables (builtins, bound methods, macros).
// Printing (Str, Repr), truthiness, equality and ordering follow Python, so a
// template renders here what it renders under transformers.
//
// Values are immutable once built, as in jinja2's ImmutableSandboxedEnvironment
// (list.append, dict.update, ... are refused), except a namespace's attributes
// ({% set ns.x = ... %}); lists, dicts and namespaces are shared by reference,
// as Python's are.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace paged::jinja {

class Value;
class Object;
class Callable;
class Interpreter;
using Array = std::vector<Value>;

class Value {
 public:
  enum class Kind : uint8_t {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,
    kTuple,
    kDict,
    kNamespace,
    kCallable,
  };

  Value() = default;  // undefined
  // An undefined value; `hint` says why ("'foo' is undefined", "'dict object'
  // has no attribute 'x'"): the message when it is used where it cannot be.
  static Value Undefined(std::string hint);
  static Value None();
  static Value Int(int64_t v);
  Value(bool v) : kind_(Kind::kBool), b_(v) {}
  Value(int v) : kind_(Kind::kInt), i_(v) {}
  Value(int64_t v) : kind_(Kind::kInt), i_(v) {}
  Value(double v) : kind_(Kind::kFloat), f_(v) {}
  Value(std::string v);
  Value(std::string_view v) : Value(std::string(v)) {}
  Value(const char* v) : Value(std::string(v)) {}
  static Value List(Array items);
  static Value Tuple(Array items);
  static Value Dict(Object items);
  static Value Namespace(Object attributes);
  static Value Function(std::shared_ptr<const Callable> f);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  // int or bool (Python's bool is an int).
  bool is_integer() const { return kind_ == Kind::kInt || kind_ == Kind::kBool; }
  // int, bool or float.
  bool is_number() const { return is_integer() || kind_ == Kind::kFloat; }
  // list or tuple.
  bool is_array() const { return kind_ == Kind::kList || kind_ == Kind::kTuple; }
  bool is_dict() const { return kind_ == Kind::kDict; }

  bool boolean() const { return b_; }
  // An int's or a bool's value.
  int64_t integer() const { return kind_ == Kind::kBool ? int64_t(b_) : i_; }
  // A number as a double.
  double number() const { return kind_ == Kind::kFloat ? f_ : double(integer()); }
  // A string's text; an undefined value's hint.
  const std::string& string() const { return s_ != nullptr ? *s_ : Empty(); }
  const Array& array() const { return *array_; }             // list or tuple
  const Object& object() const { return *object_; }          // dict or namespace
  Object& namespace_attributes() const { return *object_; }  // namespace
  const Callable& callable() const { return *callable_; }
  // The shared storage of a list, tuple, dict, namespace or callable (the
  // `sameas` test); null for the others.
  const void* identity() const;

  // Python's bool(): false for undefined, none, false, 0, 0.0, "", [], (), {}.
  bool Truthy() const;
  // Python's str(); undefined prints as "".
  std::string Str() const;
  // Python's repr() (how a value prints inside a list or dict).
  std::string Repr() const;
  // Python's type name: "str", "int", "dict", "NoneType", "Undefined", ...
  const char* TypeName() const;

 private:
  static const std::string& Empty();

  Kind kind_ = Kind::kUndefined;
  bool b_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  std::shared_ptr<const std::string> s_;  // shared: copying a value never copies its text
  std::shared_ptr<const Array> array_;
  std::shared_ptr<Object> object_;
  std::shared_ptr<const Callable> callable_;
};

// A Python dict: insertion-ordered. Setting a key equal to an existing one
// (1 == 1.0 == true, as in Python) replaces that entry's value.
class Object {
 public:
  Object() = default;
  Object(std::vector<std::pair<Value, Value>> items);  // later duplicates win

  const Value* Find(const Value& key) const;
  const Value* Find(std::string_view key) const;
  void Set(Value key, Value value);
  // Adds an entry whose key is known to be new (no search).
  void Append(Value key, Value value) { items_.emplace_back(std::move(key), std::move(value)); }
  void Clear() { items_.clear(); }
  const std::vector<std::pair<Value, Value>>& items() const { return items_; }
  size_t size() const { return items_.size(); }

 private:
  std::vector<std::pair<Value, Value>> items_;
};

// Arguments of a call: positional, then keyword (name, value) in source order.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

// A function value: a builtin (range, namespace, a bound method such as
// 'abc'.strip) or a macro.
class Callable {
 public:
  virtual ~Callable() = default;
  virtual const std::string& name() const = 0;
  virtual Value Call(Interpreter& in, CallArgs& args) const = 0;
};

// Python's ==.
bool Equal(const Value& a, const Value& b);
// Python's <, as -1, 0 or 1: numbers with numbers, strings with strings (by
// code point), lists with lists and tuples with tuples (lexicographically).
// Anything else throws (a TypeError in Python).
int Compare(const Value& a, const Value& b);

// Python's repr() of a float: the shortest text that reads back the same
// ("0.1", "1.0", "1e+16", "2.5e-07", "inf", "nan").
std::string FormatFloat(double v);

// json.dumps(v, ensure_ascii, indent, separators, sort_keys), as transformers'
// tojson filter calls it. indent < 0: on one line. Throws for values JSON
// cannot hold (undefined, namespaces, callables).
struct JsonFormat {
  bool ensure_ascii = false;
  int indent = -1;
  std::string item_separator;  // "": ", " on one line, "," with indent
  std::string key_separator = ": ";
  bool sort_keys = false;
};
std::string ToJson(const Value& v, const JsonFormat& format);

// A JSON document as a value: objects become dicts, arrays lists.
Value FromJson(const nlohmann::json& j);

}  // namespace paged::jinja
