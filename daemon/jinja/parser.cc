#include "daemon/jinja/parser.h"

#include <algorithm>
#include <initializer_list>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "daemon/jinja/error.h"
#include "daemon/jinja/lexer.h"

namespace paged::jinja {
namespace {

// Deeper nesting (of expressions or of blocks) is refused: the parser and the
// interpreter recurse once per level.
constexpr int kMaxDepth = 200;

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  std::unique_ptr<Program> Run() {
    auto program = std::make_unique<Program>();
    std::string end;
    program->body = ParseBody({}, "", 0, &end);
    return program;
  }

 private:
  struct DepthGuard {
    explicit DepthGuard(Parser* p) : p(p) {
      if (++p->depth_ > kMaxDepth) p->Fail(absl::StrCat("nested over ", kMaxDepth, " levels deep"));
    }
    ~DepthGuard() { --p->depth_; }
    Parser* p;
  };

  [[noreturn]] void Fail(const std::string& message, int line = 0) const {
    throw TemplateError(ErrorKind::kSyntax, message, line != 0 ? line : Peek().line);
  }

  const Token& Peek(size_t ahead = 0) const {
    const size_t i = std::min(pos_ + ahead, tokens_.size() - 1);
    return tokens_[i];
  }
  const Token& Next() {
    const Token& t = tokens_[pos_];
    if (pos_ + 1 < tokens_.size()) ++pos_;
    return t;
  }
  bool IsOp(std::string_view op, size_t ahead = 0) const {
    return Peek(ahead).type == TokenType::kOp && Peek(ahead).value == op;
  }
  bool IsName(std::string_view name, size_t ahead = 0) const {
    return Peek(ahead).type == TokenType::kName && Peek(ahead).value == name;
  }
  bool SkipOp(std::string_view op) {
    if (!IsOp(op)) return false;
    Next();
    return true;
  }
  bool SkipName(std::string_view name) {
    if (!IsName(name)) return false;
    Next();
    return true;
  }
  void ExpectOp(std::string_view op) {
    if (!SkipOp(op)) {
      Fail(absl::StrCat("expected token '", std::string(op), "', got ", Describe(Peek())));
    }
  }
  std::string ExpectName() {
    if (Peek().type != TokenType::kName) Fail("expected a name, got " + Describe(Peek()));
    return Next().value;
  }
  void ExpectBlockEnd() {
    if (Peek().type != TokenType::kBlockEnd) {
      Fail("expected token 'end of statement block', got " + Describe(Peek()));
    }
    Next();
  }

  static ExprPtr Make(ExprKind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }
  static StmtPtr MakeStmt(StmtKind kind, int line) {
    auto s = std::make_unique<Stmt>();
    s->kind = kind;
    s->line = line;
    return s;
  }

  // ---- statements ----

  // Statements up to a {% tag %} named in `ends` (its '{%' and name
  // consumed, *found set to the name) or the end of the template (only when
  // `ends` is empty). `open` names the block for errors, `open_line` its line.
  Body ParseBody(std::initializer_list<std::string_view> ends, std::string_view open, int open_line,
                 std::string* found) {
    DepthGuard guard(this);
    Body body;
    while (true) {
      const Token& t = Peek();
      switch (t.type) {
        case TokenType::kText: {
          StmtPtr s = MakeStmt(StmtKind::kText, t.line);
          s->text = Next().value;
          body.push_back(std::move(s));
          break;
        }
        case TokenType::kVarBegin: {
          Next();
          StmtPtr s = MakeStmt(StmtKind::kOutput, t.line);
          s->expr = ParseTuple(true, false, {});
          if (Peek().type != TokenType::kVarEnd) {
            Fail("expected token 'end of print statement', got " + Describe(Peek()));
          }
          Next();
          body.push_back(std::move(s));
          break;
        }
        case TokenType::kBlockBegin: {
          const Token& name = Peek(1);
          if (name.type == TokenType::kName &&
              std::find(ends.begin(), ends.end(), name.value) != ends.end()) {
            Next();
            *found = Next().value;
            return body;
          }
          Next();
          body.push_back(ParseStatement());
          break;
        }
        case TokenType::kEnd: {
          if (ends.size() == 0) return body;
          std::vector<std::string> want;
          for (std::string_view e : ends) want.push_back(absl::StrCat("'", std::string(e), "'"));
          Fail(absl::StrCat("unexpected end of template: the '", std::string(open),
                            "' block opened on line ", open_line, " needs ",
                            absl::StrJoin(want, " or ")));
        }
        default:
          Fail("unexpected " + Describe(t));
      }
    }
  }

  // After '{%'.
  StmtPtr ParseStatement() {
    const Token& t = Peek();
    if (t.type != TokenType::kName) Fail("tag name expected, got " + Describe(t));
    const std::string name = Next().value;
    const int line = t.line;
    if (name == "if") return ParseIf(line);
    if (name == "for") return ParseFor(line);
    if (name == "set") return ParseSet(line);
    if (name == "macro") return ParseMacro(line);
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) Fail(absl::StrCat("'", name, "' outside of a loop"), line);
      ExpectBlockEnd();
      return MakeStmt(name == "break" ? StmtKind::kBreak : StmtKind::kContinue, line);
    }
    if (name == "generation") {  // transformers' extension: the body as it is
      ExpectBlockEnd();
      StmtPtr s = MakeStmt(StmtKind::kBlock, line);
      std::string end;
      s->body = ParseBody({"endgeneration"}, "generation", line, &end);
      ExpectBlockEnd();
      return s;
    }
    static constexpr std::string_view kUnsupported[] = {
        "include", "import", "from", "extends", "block",      "call",
        "filter",  "with",   "raw",  "do",      "autoescape", "trans"};
    if (std::find(std::begin(kUnsupported), std::end(kUnsupported), name) !=
        std::end(kUnsupported)) {
      Fail(absl::StrCat("the '", name, "' tag is not supported"), line);
    }
    Fail(absl::StrCat("unknown tag '", name, "'"), line);
  }

  StmtPtr ParseIf(int line) {
    StmtPtr s = MakeStmt(StmtKind::kIf, line);
    std::string end = "elif";
    while (end == "elif") {
      ExprPtr cond = ParseTuple(false, false, {});
      ExpectBlockEnd();
      Body body = ParseBody({"elif", "else", "endif"}, "if", line, &end);
      s->branches.emplace_back(std::move(cond), std::move(body));
    }
    if (end == "else") {
      ExpectBlockEnd();
      s->else_body = ParseBody({"endif"}, "if", line, &end);
    }
    ExpectBlockEnd();
    return s;
  }

  // Names separated by commas, optionally in parentheses: for and set targets.
  void ParseTargets(Stmt* s, std::string_view stop_name) {
    const bool paren = SkipOp("(");
    while (true) {
      const int line = Peek().line;
      const std::string n = ExpectName();
      if (n == "true" || n == "false" || n == "none" || n == "True" || n == "False" ||
          n == "None") {
        Fail(absl::StrCat("can't assign to '", n, "'"), line);
      }
      s->targets.push_back(n);
      if (!SkipOp(",")) break;
      s->unpack = true;
      if ((paren && IsOp(")")) || IsName(stop_name) || IsOp("=")) break;  // trailing comma
    }
    if (paren) {
      ExpectOp(")");
      s->unpack = s->unpack || s->targets.size() > 1;
    }
  }

  StmtPtr ParseFor(int line) {
    StmtPtr s = MakeStmt(StmtKind::kFor, line);
    ParseTargets(s.get(), "in");
    if (!SkipName("in")) Fail("expected 'in', got " + Describe(Peek()));
    s->expr = ParseTuple(false, false, {"recursive", "if"});
    if (SkipName("if")) s->filter = ParseExpression(true);
    if (IsName("recursive")) Fail("recursive loops are not supported");
    ExpectBlockEnd();
    ++loop_depth_;
    std::string end;
    s->body = ParseBody({"endfor", "else"}, "for", line, &end);
    --loop_depth_;
    if (end == "else") {
      ExpectBlockEnd();
      s->else_body = ParseBody({"endfor"}, "for", line, &end);
    }
    ExpectBlockEnd();
    return s;
  }

  StmtPtr ParseSet(int line) {
    if (Peek().type == TokenType::kName && IsOp(".", 1)) {
      StmtPtr s = MakeStmt(StmtKind::kSetAttribute, line);
      s->targets.push_back(Next().value);
      Next();  // '.'
      s->targets.push_back(ExpectName());
      ExpectOp("=");
      s->expr = ParseTuple(true, false, {});
      ExpectBlockEnd();
      return s;
    }
    StmtPtr s = MakeStmt(StmtKind::kSet, line);
    ParseTargets(s.get(), "");
    if (SkipOp("=")) {
      s->expr = ParseTuple(true, false, {});
      ExpectBlockEnd();
      return s;
    }
    s->kind = StmtKind::kSetBlock;
    if (SkipOp("|")) s->filter = ParseFilter(nullptr, Peek().line);
    ExpectBlockEnd();
    std::string end;
    const int saved = loop_depth_;
    s->body = ParseBody({"endset"}, "set", line, &end);
    loop_depth_ = saved;
    ExpectBlockEnd();
    return s;
  }

  StmtPtr ParseMacro(int line) {
    StmtPtr s = MakeStmt(StmtKind::kMacro, line);
    s->targets.push_back(ExpectName());
    ExpectOp("(");
    bool defaults = false;
    while (!IsOp(")")) {
      if (!s->params.empty()) ExpectOp(",");
      if (IsOp(")")) break;
      std::string param = ExpectName();
      ExprPtr def;
      if (SkipOp("=")) {
        def = ParseExpression(true);
        defaults = true;
      } else if (defaults) {
        Fail("non-default argument follows default argument");
      }
      s->params.emplace_back(std::move(param), std::move(def));
    }
    ExpectOp(")");
    ExpectBlockEnd();
    const int saved = loop_depth_;
    loop_depth_ = 0;  // a loop outside the macro does not hold a break inside it
    std::string end;
    s->body = ParseBody({"endmacro"}, "macro", line, &end);
    loop_depth_ = saved;
    if (Peek().type == TokenType::kName) Next();  // {% endmacro name %}
    ExpectBlockEnd();
    return s;
  }

  // ---- expressions ----

  bool IsTupleEnd(std::initializer_list<std::string_view> extra_ends) const {
    const Token& t = Peek();
    if (t.type == TokenType::kVarEnd || t.type == TokenType::kBlockEnd ||
        t.type == TokenType::kEnd || IsOp(")")) {
      return true;
    }
    if (t.type == TokenType::kName) {
      return std::find(extra_ends.begin(), extra_ends.end(), t.value) != extra_ends.end();
    }
    return false;
  }

  // Expressions separated by commas: one is itself, several (or a trailing
  // comma) a tuple.
  ExprPtr ParseTuple(bool with_condexpr, bool explicit_parens,
                     std::initializer_list<std::string_view> extra_ends) {
    const int line = Peek().line;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) ExpectOp(",");
      if (IsTupleEnd(extra_ends)) break;
      items.push_back(ParseExpression(with_condexpr));
      if (IsOp(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parens) Fail("expected an expression, got " + Describe(Peek()));
    }
    ExprPtr t = Make(ExprKind::kTuple, line);
    t->items = std::move(items);
    return t;
  }

  ExprPtr ParseExpression(bool with_condexpr) {
    return with_condexpr ? ParseCondExpr() : ParseOr();
  }

  ExprPtr ParseCondExpr() {
    DepthGuard guard(this);
    ExprPtr expr = ParseOr();
    while (IsName("if")) {
      const int line = Next().line;
      ExprPtr test = ParseOr();
      ExprPtr otherwise;
      if (SkipName("else")) otherwise = ParseCondExpr();
      ExprPtr c = Make(ExprKind::kCond, line);
      c->items.push_back(std::move(test));
      c->items.push_back(std::move(expr));
      c->items.push_back(std::move(otherwise));
      expr = std::move(c);
    }
    return expr;
  }

  ExprPtr Binary(ExprKind kind, ExprPtr left, ExprPtr right, int line, std::string op = "") {
    ExprPtr e = Make(kind, line);
    e->name = std::move(op);
    e->items.push_back(std::move(left));
    e->items.push_back(std::move(right));
    return e;
  }

  ExprPtr ParseOr() {
    ExprPtr left = ParseAnd();
    while (IsName("or")) {
      const int line = Next().line;
      left = Binary(ExprKind::kOr, std::move(left), ParseAnd(), line);
    }
    return left;
  }

  ExprPtr ParseAnd() {
    ExprPtr left = ParseNot();
    while (IsName("and")) {
      const int line = Next().line;
      left = Binary(ExprKind::kAnd, std::move(left), ParseNot(), line);
    }
    return left;
  }

  ExprPtr ParseNot() {
    if (IsName("not")) {
      DepthGuard guard(this);
      const int line = Next().line;
      ExprPtr e = Make(ExprKind::kNot, line);
      e->items.push_back(ParseNot());
      return e;
    }
    return ParseCompare();
  }

  ExprPtr ParseCompare() {
    const int line = Peek().line;
    ExprPtr first = ParseMath1();
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (IsOp("==") || IsOp("!=") || IsOp("<") || IsOp("<=") || IsOp(">") || IsOp(">=")) {
        op = Next().value;
      } else if (IsName("in")) {
        Next();
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        Next();
        Next();
        op = "not in";
      } else {
        break;
      }
      if (!cmp) {
        cmp = Make(ExprKind::kCompare, line);
        cmp->items.push_back(std::move(first));
      }
      cmp->ops.push_back(op);
      cmp->items.push_back(ParseMath1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }

  ExprPtr ParseMath1() {
    ExprPtr left = ParseConcat();
    while (IsOp("+") || IsOp("-")) {
      const Token& t = Next();
      const int line = t.line;
      std::string op = t.value;
      left = Binary(ExprKind::kBinary, std::move(left), ParseConcat(), line, std::move(op));
    }
    return left;
  }

  ExprPtr ParseConcat() {
    ExprPtr left = ParseMath2();
    while (IsOp("~")) {
      const int line = Next().line;
      left = Binary(ExprKind::kBinary, std::move(left), ParseMath2(), line, "~");
    }
    return left;
  }

  ExprPtr ParseMath2() {
    ExprPtr left = ParsePow();
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const Token& t = Next();
      const int line = t.line;
      std::string op = t.value;
      left = Binary(ExprKind::kBinary, std::move(left), ParsePow(), line, std::move(op));
    }
    return left;
  }

  ExprPtr ParsePow() {
    ExprPtr left = ParseUnary(true);
    while (IsOp("**")) {
      const int line = Next().line;
      left = Binary(ExprKind::kBinary, std::move(left), ParseUnary(true), line, "**");
    }
    return left;
  }

  ExprPtr ParseUnary(bool with_filter) {
    DepthGuard guard(this);
    ExprPtr node;
    if (IsOp("-") || IsOp("+")) {
      const Token& t = Next();
      node = Make(t.value == "-" ? ExprKind::kNeg : ExprKind::kPos, t.line);
      node->items.push_back(ParseUnary(false));
    } else {
      node = ParsePrimary();
    }
    node = ParsePostfix(std::move(node));
    if (with_filter) node = ParseFilterExpr(std::move(node));
    return node;
  }

  ExprPtr Literal(Value v, int line) {
    ExprPtr e = Make(ExprKind::kLiteral, line);
    e->literal = std::move(v);
    return e;
  }

  ExprPtr ParsePrimary() {
    const Token& t = Peek();
    const int line = t.line;
    switch (t.type) {
      case TokenType::kName: {
        const std::string n = Next().value;
        if (n == "true" || n == "True") return Literal(Value(true), line);
        if (n == "false" || n == "False") return Literal(Value(false), line);
        if (n == "none" || n == "None") return Literal(Value::None(), line);
        ExprPtr e = Make(ExprKind::kName, line);
        e->name = n;
        return e;
      }
      case TokenType::kString: {
        std::string s;
        while (Peek().type == TokenType::kString) s += Next().value;
        return Literal(Value(std::move(s)), line);
      }
      case TokenType::kInt:
        return Literal(Value(Next().int_value), line);
      case TokenType::kFloat:
        return Literal(Value(Next().float_value), line);
      case TokenType::kOp:
        if (t.value == "(") {
          Next();
          ExprPtr e = ParseTuple(true, true, {});
          ExpectOp(")");
          return e;
        }
        if (t.value == "[") return ParseList();
        if (t.value == "{") return ParseDict();
        break;
      default:
        break;
    }
    Fail("unexpected " + Describe(t));
  }

  ExprPtr ParseList() {
    ExprPtr e = Make(ExprKind::kList, Next().line);
    while (!IsOp("]")) {
      if (!e->items.empty()) ExpectOp(",");
      if (IsOp("]")) break;
      e->items.push_back(ParseExpression(true));
    }
    ExpectOp("]");
    return e;
  }

  ExprPtr ParseDict() {
    ExprPtr e = Make(ExprKind::kDict, Next().line);
    while (!IsOp("}")) {
      if (!e->items.empty()) ExpectOp(",");
      if (IsOp("}")) break;
      e->items.push_back(ParseExpression(true));
      ExpectOp(":");
      e->items.push_back(ParseExpression(true));
    }
    ExpectOp("}");
    return e;
  }

  ExprPtr ParsePostfix(ExprPtr node) {
    while (true) {
      if (IsOp(".")) {
        const int line = Next().line;
        const Token& a = Peek();
        if (a.type == TokenType::kName) {
          ExprPtr e = Make(ExprKind::kAttr, line);
          e->name = Next().value;
          e->items.push_back(std::move(node));
          node = std::move(e);
        } else if (a.type == TokenType::kInt) {
          ExprPtr e = Make(ExprKind::kItem, line);
          e->items.push_back(std::move(node));
          e->items.push_back(Literal(Value(Next().int_value), line));
          node = std::move(e);
        } else {
          Fail("expected name or number after '.', got " + Describe(a));
        }
      } else if (IsOp("[")) {
        node = ParseSubscript(std::move(node));
      } else if (IsOp("(")) {
        node = ParseCall(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr ParseSubscript(ExprPtr node) {
    const int line = Next().line;  // '['
    ExprPtr start;
    if (!IsOp(":")) {
      start = ParseExpression(true);
      if (!IsOp(":")) {
        if (IsOp(",")) Fail("tuple subscripts are not supported");
        ExpectOp("]");
        ExprPtr e = Make(ExprKind::kItem, line);
        e->items.push_back(std::move(node));
        e->items.push_back(std::move(start));
        return e;
      }
    }
    ExpectOp(":");
    ExprPtr stop;
    ExprPtr step;
    if (!IsOp(":") && !IsOp("]")) stop = ParseExpression(true);
    if (SkipOp(":")) {
      if (!IsOp("]")) step = ParseExpression(true);
    }
    ExpectOp("]");
    ExprPtr e = Make(ExprKind::kSlice, line);
    e->items.push_back(std::move(node));
    e->items.push_back(std::move(start));
    e->items.push_back(std::move(stop));
    e->items.push_back(std::move(step));
    return e;
  }

  // (args) into e->items (after what is already there) and e->keywords.
  void ParseArgs(Expr* e) {
    const int line = Peek().line;
    ExpectOp("(");
    bool first = true;
    while (!IsOp(")")) {
      if (!first) {
        ExpectOp(",");
        if (IsOp(")")) break;
      }
      first = false;
      if (IsOp("*") || IsOp("**")) Fail("*args and **kwargs in calls are not supported");
      if (Peek().type == TokenType::kName && IsOp("=", 1)) {
        std::string key = Next().value;
        Next();
        e->keywords.emplace_back(std::move(key), ParseExpression(true));
      } else {
        if (!e->keywords.empty()) Fail("invalid syntax for function call expression", line);
        e->items.push_back(ParseExpression(true));
      }
    }
    ExpectOp(")");
  }

  ExprPtr ParseCall(ExprPtr callee) {
    ExprPtr e = Make(ExprKind::kCall, Peek().line);
    e->items.push_back(std::move(callee));
    ParseArgs(e.get());
    return e;
  }

  // After '|': name, optional (args). `value` may be null (a filter block).
  ExprPtr ParseFilter(ExprPtr value, int line) {
    ExprPtr e = Make(ExprKind::kFilter, line);
    e->name = ExpectName();
    while (IsOp(".")) {
      Next();
      e->name += "." + ExpectName();
    }
    e->items.push_back(std::move(value));
    if (IsOp("(")) ParseArgs(e.get());
    return e;
  }

  ExprPtr ParseTest(ExprPtr value) {
    const int line = Next().line;  // 'is'
    const bool negated = SkipName("not");
    ExprPtr e = Make(ExprKind::kTest, line);
    e->name = ExpectName();
    while (IsOp(".")) {
      Next();
      e->name += "." + ExpectName();
    }
    e->items.push_back(std::move(value));
    const Token& t = Peek();
    if (IsOp("(")) {
      ParseArgs(e.get());
    } else if ((t.type == TokenType::kName || t.type == TokenType::kString ||
                t.type == TokenType::kInt || t.type == TokenType::kFloat || IsOp("[") ||
                IsOp("{")) &&
               !IsName("else") && !IsName("or") && !IsName("and")) {
      if (IsName("is")) Fail("you cannot chain multiple tests with is");
      e->items.push_back(ParsePostfix(ParsePrimary()));
    }
    if (!negated) return e;
    ExprPtr n = Make(ExprKind::kNot, line);
    n->items.push_back(std::move(e));
    return n;
  }

  ExprPtr ParseFilterExpr(ExprPtr node) {
    while (true) {
      if (IsOp("|")) {
        const int line = Next().line;
        node = ParseFilter(std::move(node), line);
      } else if (IsName("is")) {
        node = ParseTest(std::move(node));
      } else if (IsOp("(")) {
        node = ParseCall(std::move(node));
      } else {
        return node;
      }
    }
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

std::unique_ptr<Program> Parse(std::string_view source) { return Parser(Lex(source)).Run(); }

}  // namespace paged::jinja
