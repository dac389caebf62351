#include "daemon/jinja/lexer.h"

#include <cmath>
#include <cstdlib>
#include <optional>

#include "absl/strings/str_cat.h"
#include "daemon/jinja/error.h"
#include "daemon/jinja/text.h"

namespace paged::jinja {
namespace {

[[noreturn]] void Fail(int line, const std::string& message) {
  throw TemplateError(ErrorKind::kSyntax, message, line);
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsNameStart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsNameChar(char c) { return IsNameStart(c) || IsDigit(c); }
int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// \r\n and \r become \n; one trailing newline is dropped.
std::string Normalize(std::string_view source) {
  std::string s;
  s.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      s += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      s += source[i];
    }
  }
  if (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) : src_(Normalize(source)) {}

  std::vector<Token> Run() {
    bool line_starting = true;
    while (pos_ < src_.size()) {
      const size_t tag = FindTag(pos_);
      std::string text = src_.substr(pos_, tag - pos_);
      if (tag == src_.size()) {
        Emit(TokenType::kText, std::move(text), line_);
        break;
      }
      const char kind = src_[tag + 1];
      const char sign = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      if (sign == '-') {
        text = text::Strip(text, std::nullopt, false, true);
      } else if (sign != '+' && kind != '{') {
        // lstrip_blocks: spaces and tabs from the start of the line to a
        // block or comment tag.
        const size_t nl = text.rfind('\n');
        const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
        if ((l_pos > 0 || line_starting) &&
            text.find_first_not_of(" \t", l_pos) == std::string::npos) {
          text.resize(l_pos);
        }
      }
      const int text_line = line_;
      Advance(tag);
      if (!text.empty()) Emit(TokenType::kText, std::move(text), text_line);
      const int tag_line = line_;
      Advance(tag + 2 + (sign == '-' || sign == '+' ? 1 : 0));
      if (kind == '#') {
        line_starting = Comment(tag_line);
      } else {
        line_starting = Tag(kind == '{', tag_line);
      }
    }
    Emit(TokenType::kEnd, "", line_);
    return std::move(tokens_);
  }

 private:
  // The next "{{", "{%" or "{#" at or after `from`; src_.size() when none.
  size_t FindTag(size_t from) const {
    for (size_t i = src_.find('{', from); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#'))
        return i;
    }
    return src_.size();
  }

  void Advance(size_t to) {
    for (size_t i = pos_; i < to; ++i) {
      if (src_[i] == '\n') ++line_;
    }
    pos_ = to;
  }

  // Past the whitespace at pos_ (Python's \s*, Unicode spaces included).
  void SkipSpace() {
    size_t i = pos_;
    while (i < src_.size()) {
      if (static_cast<unsigned char>(src_[i]) < 0x80) {
        if (!text::IsSpace(char32_t(src_[i]))) break;
        ++i;
        continue;
      }
      const std::vector<char32_t> cp = text::Decode(src_.substr(i, 4));
      if (cp.empty() || !text::IsSpace(cp[0])) break;
      std::string enc;
      text::AppendUtf8(cp[0], &enc);
      i += enc.size();
    }
    Advance(i);
  }

  void Emit(TokenType type, std::string value, int line) {
    Token t;
    t.type = type;
    t.value = std::move(value);
    t.line = line;
    tokens_.push_back(std::move(t));
  }

  // A {# comment #}: nothing is emitted. Returns whether what it consumed
  // ends with a newline (the next text starts a line, for lstrip_blocks).
  bool Comment(int line) {
    const size_t end = src_.find("#}", pos_);
    if (end == std::string::npos) Fail(line, "missing end of comment tag");
    const char before = end > pos_ ? src_[end - 1] : '\0';
    Advance(end + 2);
    if (before == '-') {
      const size_t from = pos_;
      SkipSpace();
      return pos_ > from && src_[pos_ - 1] == '\n';
    }
    if (before != '+' && pos_ < src_.size() && src_[pos_] == '\n') {
      Advance(pos_ + 1);
      return true;
    }
    return false;
  }

  // The inside of a {{ }} or {% %} tag, its end included. Returns whether
  // the end consumed a newline.
  bool Tag(bool variable, int line) {
    Emit(variable ? TokenType::kVarBegin : TokenType::kBlockBegin, "", line);
    std::vector<char> open;  // brackets not yet closed: ends are not ends inside them
    while (true) {
      SkipSpace();
      if (pos_ >= src_.size()) {
        Fail(line, variable ? "unexpected end of template: '}}' was expected to close the "
                              "'{{' opened here"
                            : "unexpected end of template: '%}' was expected to close the "
                              "'{%' opened here");
      }
      const std::string_view rest = std::string_view(src_).substr(pos_);
      if (open.empty()) {
        const char* close = variable ? "}}" : "%}";
        const bool minus = rest.starts_with(std::string("-") + close);
        const bool plus = !variable && rest.starts_with(std::string("+") + close);
        if (minus || plus || rest.starts_with(close)) {
          Emit(variable ? TokenType::kVarEnd : TokenType::kBlockEnd, "", line_);
          Advance(pos_ + 2 + (minus || plus ? 1 : 0));
          if (minus) {
            const size_t from = pos_;
            SkipSpace();
            return pos_ > from && src_[pos_ - 1] == '\n';
          }
          if (!variable && !plus && pos_ < src_.size() && src_[pos_] == '\n') {
            Advance(pos_ + 1);  // trim_blocks
            return true;
          }
          return false;
        }
      }
      const char c = rest[0];
      if (IsDigit(c)) {
        Number();
      } else if (IsNameStart(c)) {
        size_t e = 1;
        while (e < rest.size() && IsNameChar(rest[e])) ++e;
        Emit(TokenType::kName, std::string(rest.substr(0, e)), line_);
        Advance(pos_ + e);
      } else if (c == '\'' || c == '"') {
        String();
      } else {
        Operator(&open);
      }
    }
  }

  // Digits with optional '_' between them, from pos_; "" when none.
  std::string Digits() {
    std::string out;
    size_t i = pos_;
    while (i < src_.size() && IsDigit(src_[i])) {
      out += src_[i++];
      if (i + 1 < src_.size() && src_[i] == '_' && IsDigit(src_[i + 1])) ++i;
    }
    Advance(i);
    return out;
  }

  void Number() {
    const int line = line_;
    // After a '.', digits are an index (x.0.1 is x[0][1]), never a float.
    const bool after_dot =
        !tokens_.empty() && tokens_.back().type == TokenType::kOp && tokens_.back().value == ".";
    std::string text = Digits();
    bool is_float = false;
    if (!after_dot && pos_ + 1 < src_.size() && src_[pos_] == '.' && IsDigit(src_[pos_ + 1])) {
      Advance(pos_ + 1);
      text += "." + Digits();
      is_float = true;
    }
    if (!after_dot && pos_ < src_.size() && src_[pos_] == 'e') {
      size_t i = pos_ + 1;
      std::string e = "e";
      if (i < src_.size() && (src_[i] == '+' || src_[i] == '-')) e += src_[i++];
      if (i < src_.size() && IsDigit(src_[i])) {
        Advance(i);
        text += e + Digits();
        is_float = true;
      }
    }
    Token t;
    t.line = line;
    t.value = text;
    if (is_float) {
      t.type = TokenType::kFloat;
      t.float_value = std::strtod(text.c_str(), nullptr);
    } else {
      t.type = TokenType::kInt;
      errno = 0;
      char* end = nullptr;
      t.int_value = std::strtoll(text.c_str(), &end, 10);
      if (errno == ERANGE) Fail(line, "integer literal " + text + " is too large");
    }
    tokens_.push_back(std::move(t));
  }

  // A quoted string with Python's escapes.
  void String() {
    const int line = line_;
    const char quote = src_[pos_];
    size_t i = pos_ + 1;
    std::string out;
    while (true) {
      if (i >= src_.size()) Fail(line, "unterminated string literal");
      const char c = src_[i];
      if (c == quote) break;
      if (c != '\\') {
        out += c;
        ++i;
        continue;
      }
      if (i + 1 >= src_.size()) Fail(line, "unterminated string literal");
      const char e = src_[i + 1];
      i += 2;
      switch (e) {
        case '\n':
          break;  // a line continuation
        case '\\':
        case '\'':
        case '"':
          out += e;
          break;
        case 'a':
          out += '\a';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'v':
          out += '\v';
          break;
        case 'x':
        case 'u':
        case 'U': {
          const int n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          uint32_t cp = 0;
          for (int k = 0; k < n; ++k) {
            const int h = i + size_t(k) < src_.size() ? HexValue(src_[i + k]) : -1;
            if (h < 0) Fail(line, absl::StrCat("truncated \\", std::string(1, e), " escape"));
            cp = cp * 16 + uint32_t(h);
          }
          if (cp > 0x10FFFF) Fail(line, "illegal Unicode character in a string escape");
          i += size_t(n);
          text::AppendUtf8(char32_t(cp), &out);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = uint32_t(e - '0');
            for (int k = 0; k < 2 && i < src_.size() && src_[i] >= '0' && src_[i] <= '7'; ++k)
              cp = cp * 8 + uint32_t(src_[i++] - '0');
            text::AppendUtf8(char32_t(cp), &out);
          } else if (e == 'N') {
            Fail(line, "\\N{...} escapes are not supported");
          } else {
            out += '\\';
            out += e;
          }
      }
    }
    Advance(i + 1);
    Token t;
    t.type = TokenType::kString;
    t.value = std::move(out);
    t.line = line;
    tokens_.push_back(std::move(t));
  }

  void Operator(std::vector<char>* open) {
    static constexpr std::string_view kTwo[] = {"//", "**", "==", "!=", ">=", "<="};
    const std::string_view rest = std::string_view(src_).substr(pos_);
    for (std::string_view op : kTwo) {
      if (rest.starts_with(op)) {
        Emit(TokenType::kOp, std::string(op), line_);
        Advance(pos_ + 2);
        return;
      }
    }
    const char c = rest[0];
    static constexpr std::string_view kOne = "+-*/%~[](){},.:|=<>;";
    if (kOne.find(c) == std::string_view::npos) {
      Fail(line_, absl::StrCat("unexpected character '", std::string(1, c), "'"));
    }
    if (c == '(' || c == '[' || c == '{') open->push_back(c);
    if (c == ')' || c == ']' || c == '}') {
      const char want = c == ')' ? '(' : c == ']' ? '[' : '{';
      if (open->empty() || open->back() != want) {
        Fail(line_, absl::StrCat("unexpected '", std::string(1, c), "'"));
      }
      open->pop_back();
    }
    Emit(TokenType::kOp, std::string(1, c), line_);
    Advance(pos_ + 1);
  }

  std::string src_;
  size_t pos_ = 0;
  int line_ = 1;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> Lex(std::string_view source) { return Lexer(source).Run(); }

std::string Describe(const Token& t) {
  switch (t.type) {
    case TokenType::kText:
      return "template data";
    case TokenType::kVarBegin:
      return "'{{'";
    case TokenType::kVarEnd:
      return "end of print statement";
    case TokenType::kBlockBegin:
      return "'{%'";
    case TokenType::kBlockEnd:
      return "end of statement block";
    case TokenType::kName:
    case TokenType::kOp:
    case TokenType::kInt:
    case TokenType::kFloat:
      return "'" + t.value + "'";
    case TokenType::kString:
      return "a string";
    case TokenType::kEnd:
      return "end of template";
  }
  return "?";
}

}  // namespace paged::jinja
