// Python's operators on values and jinja2's attribute and item access
// (internal to the engine). Errors are thrown as TemplateError.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "daemon/jinja/value.h"

namespace paged::jinja {

// Throws the UndefinedError of using an undefined value.
[[noreturn]] void ThrowUndefined(const Value& v);

// a OP b for + - * / // % ** ~ (Python semantics; + joins strings, lists and
// tuples; * repeats them; ~ joins the str() of both).
Value BinaryOp(Interpreter& in, const std::string& op, const Value& a, const Value& b);
Value Negate(const Value& v);
Value UnaryPlus(const Value& v);
// a OP b for == != < <= > >= in, "not in".
bool CompareOp(Interpreter& in, const std::string& op, const Value& a, const Value& b);
// Python's `item in container` (a substring of a string, an item of a list,
// a key of a dict; false for undefined).
bool Contains(Interpreter& in, const Value& container, const Value& item);

// What a for loop goes through: a list's or tuple's items, a string's
// characters, a dict's keys, nothing for undefined.
std::vector<Value> Iterate(Interpreter& in, const Value& v);

// jinja2's environment.getattr: obj.name (a dict's key, a namespace's
// attribute, a str / list / dict method); undefined when absent.
Value GetAttr(const Value& obj, const std::string& name);
// jinja2's environment.getitem: obj[key]; undefined when absent.
Value GetItem(Interpreter& in, const Value& obj, const Value& key);
// obj[start:stop:step] of a string, list or tuple.
Value SliceOf(Interpreter& in, const Value& obj, std::optional<int64_t> start,
              std::optional<int64_t> stop, std::optional<int64_t> step);

}  // namespace paged::jinja
