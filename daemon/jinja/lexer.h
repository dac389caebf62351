// The lexer: template source to tokens, as jinja2's lexer does it under
// transformers' settings (trim_blocks, lstrip_blocks, keep_trailing_newline
// off): text between tags, {{ }} and {% %} tags with their expression tokens,
// {# #} comments dropped, and the whitespace control of '-' and '+'.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace paged::jinja {

enum class TokenType {
  kText,        // template text to output as it is
  kVarBegin,    // {{
  kVarEnd,      // }}
  kBlockBegin,  // {%
  kBlockEnd,    // %}
  kName,        // an identifier (keywords too: if, for, in, not, ...)
  kInt,
  kFloat,
  kString,  // value: the decoded text
  kOp,      // value: the operator ("+", "//", "==", "(", ...)
  kEnd,     // end of the template
};

struct Token {
  TokenType type;
  std::string value;  // text, name, string or operator
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;
};

// Throws TemplateError(kSyntax) with the line of the problem.
std::vector<Token> Lex(std::string_view source);

// "'name'", "end of statement block", ...: how an error names a token.
std::string Describe(const Token& t);

}  // namespace paged::jinja
