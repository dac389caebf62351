// The parser: tokens to a Program, following jinja2's grammar and operator
// precedence (parser.py): or < and < not < comparisons (in, not in) < + - <
// ~ < * / // % < ** < unary - + < primary with .attr, [item], [a:b:c],
// (call), | filter and `is` test.
#pragma once

#include <memory>
#include <string_view>

#include "daemon/jinja/ast.h"

namespace paged::jinja {

// Throws TemplateError(kSyntax) naming the line: an unknown or unsupported
// tag ({% include %}, {% call %}, ...), a block left open, bad syntax,
// nesting deeper than 200 levels.
std::unique_ptr<Program> Parse(std::string_view source);

}  // namespace paged::jinja
