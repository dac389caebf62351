// The parsed template: statements (text, output, if, for, set, macro, ...)
// holding expressions. Every node keeps its source line for errors.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "daemon/jinja/value.h"

namespace paged::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

enum class ExprKind {
  kLiteral,  // literal
  kName,     // name
  kList,     // items: the elements
  kTuple,    // items: the elements
  kDict,     // items: key0, value0, key1, value1, ...
  kAttr,     // items: [object]; name: the attribute (x.name)
  kItem,     // items: [object, key] (x[key])
  kSlice,    // items: [object, start, stop, step], null where absent (x[a:b:c])
  kCall,     // items: [callee, positional...]; keywords
  kFilter,   // items: [value, positional...]; name; keywords (x | name(...))
  kTest,     // items: [value, positional...]; name; keywords (x is name ...)
  kNeg,      // items: [operand]
  kPos,      // items: [operand]
  kNot,      // items: [operand]
  kAnd,      // items: [left, right]
  kOr,       // items: [left, right]
  kBinary,   // items: [left, right]; name: + - * / // % ** ~
  kCompare,  // items: [first, one operand per op]; ops: == != < <= > >= in "not in"
  kCond,     // items: [test, then, else (null: undefined)] (then if test else else)
};

struct Expr {
  ExprKind kind;
  int line = 0;
  Value literal;
  std::string name;
  std::vector<ExprPtr> items;
  std::vector<std::pair<std::string, ExprPtr>> keywords;
  std::vector<std::string> ops;
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

enum class StmtKind {
  kText,          // text
  kOutput,        // expr ({{ expr }})
  kIf,            // branches (condition, body), else_body
  kFor,           // targets, expr (the iterable), filter (null: none), body, else_body
  kSet,           // targets, expr
  kSetAttribute,  // targets: [namespace name, attribute], expr ({% set ns.x = expr %})
  kSetBlock,      // targets, body, filter (a kFilter with a null value, or null)
  kMacro,         // targets: [name], params, body
  kBreak,
  kContinue,
  kBlock,  // body, rendered in place ({% generation %} ... {% endgeneration %})
};

struct Stmt {
  StmtKind kind;
  int line = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr filter;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body;
  Body else_body;
  std::vector<std::string> targets;
  bool unpack = false;  // kFor / kSet / kSetBlock: the target is a tuple of names
  std::vector<std::pair<std::string, ExprPtr>> params;  // kMacro: name, default (or null)
};

struct Program {
  Body body;
};

}  // namespace paged::jinja
