// The engine's builtins (internal): the global functions, the methods of
// strings, lists and dicts, and the filters and tests, each as jinja2 and
// Python define it.
#pragma once

#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/jinja/interpreter.h"
#include "daemon/jinja/value.h"

namespace paged::jinja {

// Defines range, namespace, dict, raise_exception and strftime_now.
void AddGlobals(Scope* globals);

// `obj.name` when it is a method (a callable bound to obj); undefined with
// jinja2's sandbox message for the methods that would modify obj
// (list.append, dict.update, ...); nullopt when obj has no such method.
std::optional<Value> MethodOf(const Value& obj, const std::string& name);

Value ApplyFilter(Interpreter& in, const std::string& name, const Value& value, CallArgs& args);
bool ApplyTest(Interpreter& in, const std::string& name, const Value& value, CallArgs& args);

// The arguments bound to `params` (positional ones first, then by keyword);
// nullopt for those not given. Throws for too many or unknown arguments,
// naming `what`.
std::vector<std::optional<Value>> BindArgs(const CallArgs& args,
                                           std::initializer_list<std::string_view> params,
                                           const std::string& what);
// An argument that must be a string / an integer / anything truthy.
std::string StringArg(const std::optional<Value>& v, const std::string& what, std::string fallback);
int64_t IntArg(const std::optional<Value>& v, const std::string& what, int64_t fallback);
bool BoolArg(const std::optional<Value>& v, bool fallback);

// A callable implemented in C++.
std::shared_ptr<const Callable> MakeBuiltin(std::string name,
                                            std::function<Value(Interpreter&, CallArgs&)> fn);

}  // namespace paged::jinja
