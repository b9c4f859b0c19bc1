#include "tokenizer/jinja_parser.h"

#include <charconv>
#include <cstdlib>
#include <set>

namespace shardlm::jinja {

namespace {

class Parser {
 public:
  explicit Parser(const std::vector<Token>& t) : t_(t) {}

  Expected<Body> parse_all() {
    Body body;
    std::string end;
    SHARDLM_TRY(parse_body(body, {}, end));
    if (!at(Tok::kEof)) return error(cur(), "unexpected tag");
    return body;
  }

 private:
  const Token& cur() const { return t_[std::min(i_, t_.size() - 1)]; }
  const Token& peek(size_t k = 1) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  bool at(Tok type) const { return cur().type == type; }
  bool at_op(std::string_view op) const { return cur().type == Tok::kOp && cur().value == op; }
  bool at_name(std::string_view n) const { return cur().type == Tok::kName && cur().value == n; }
  void next() {
    if (i_ < t_.size() - 1) ++i_;
  }

  Status error(const Token& tok, const std::string& msg) const {
    std::string near;
    switch (tok.type) {
      case Tok::kEof: near = "end of template"; break;
      case Tok::kBlockEnd: near = "'%}'"; break;
      case Tok::kVarEnd: near = "'}}'"; break;
      case Tok::kText: near = "text"; break;
      default: near = "'" + tok.value + "'"; break;
    }
    return make_error(ErrorCode::kInvalidArgument, "template syntax error at {}: {} (at {})", where(tok.line, tok.col), msg,
                      near);
  }
  Status expect_op(std::string_view op) {
    if (!at_op(op)) return error(cur(), fmt::format("expected '{}'", op));
    next();
    return Status::Ok();
  }
  Status expect_block_end() {
    if (!at(Tok::kBlockEnd)) return error(cur(), "expected '%}'");
    next();
    return Status::Ok();
  }
  Expected<std::string> expect_name() {
    if (!at(Tok::kName)) return error(cur(), "expected a name");
    std::string n = cur().value;
    next();
    return n;
  }

  ExprPtr node(Expr::Type type, const Token& at_tok) {
    auto e = std::make_unique<Expr>();
    e->type = type;
    e->line = at_tok.line;
    e->col = at_tok.col;
    return e;
  }

  // Parses statements until one of `enders` (a block tag name) is seen; the
  // ender's name is returned in `end` with the stream positioned after the name.
  Status parse_body(Body& body, const std::set<std::string>& enders, std::string& end) {
    while (true) {
      const Token& tok = cur();
      if (tok.type == Tok::kEof) {
        if (!enders.empty()) {
          std::string list;
          for (const auto& e : enders) list += (list.empty() ? "" : " or ") + e;
          return error(tok, "unexpected end of template; expected {% " + list + " %}");
        }
        return Status::Ok();
      }
      if (tok.type == Tok::kText) {
        auto s = std::make_unique<Stmt>();
        s->type = Stmt::Type::kText;
        s->text = tok.value;
        s->line = tok.line;
        s->col = tok.col;
        body.push_back(std::move(s));
        next();
        continue;
      }
      if (tok.type == Tok::kVarBegin) {
        next();
        auto s = std::make_unique<Stmt>();
        s->type = Stmt::Type::kOutput;
        s->line = tok.line;
        s->col = tok.col;
        SHARDLM_ASSIGN_OR_RETURN(s->expr, parse_tuple_expr());
        if (!at(Tok::kVarEnd)) return error(cur(), "expected '}}'");
        next();
        body.push_back(std::move(s));
        continue;
      }
      if (tok.type != Tok::kBlockBegin) return error(tok, "unexpected token");
      next();
      if (!at(Tok::kName)) return error(cur(), "expected a tag name");
      const Token& name_tok = cur();
      std::string name = name_tok.value;
      if (enders.count(name)) {
        next();
        end = name;
        return Status::Ok();
      }
      next();
      StmtPtr s;
      SHARDLM_ASSIGN_OR_RETURN(s, parse_statement(name, name_tok));
      body.push_back(std::move(s));
    }
  }

  Expected<StmtPtr> parse_statement(const std::string& name, const Token& tok) {
    DepthGuard guard(this);
    SHARDLM_TRY(check_depth());
    auto s = std::make_unique<Stmt>();
    s->line = tok.line;
    s->col = tok.col;
    std::string end;
    if (name == "if") {
      s->type = Stmt::Type::kIf;
      ExprPtr cond;
      SHARDLM_ASSIGN_OR_RETURN(cond, parse_expr());
      SHARDLM_TRY(expect_block_end());
      while (true) {
        Body b;
        SHARDLM_TRY(parse_body(b, {"elif", "else", "endif"}, end));
        s->branches.emplace_back(std::move(cond), std::move(b));
        if (end == "endif") break;
        if (end == "elif") {
          SHARDLM_ASSIGN_OR_RETURN(cond, parse_expr());
        } else {
          cond = nullptr;
          SHARDLM_TRY(expect_block_end());
          Body eb;
          SHARDLM_TRY(parse_body(eb, {"endif"}, end));
          s->branches.emplace_back(nullptr, std::move(eb));
          break;
        }
        SHARDLM_TRY(expect_block_end());
      }
      SHARDLM_TRY(expect_block_end());
      return s;
    }
    if (name == "for") {
      s->type = Stmt::Type::kFor;
      bool paren = at_op("(");
      if (paren) next();
      while (true) {
        SHARDLM_ASSIGN_OR_RETURN(std::string v, expect_name());
        s->names.push_back(v);
        if (!at_op(",")) break;
        next();
      }
      if (paren) SHARDLM_TRY(expect_op(")"));
      if (!at_name("in")) return error(cur(), "expected 'in' in for loop");
      next();
      SHARDLM_ASSIGN_OR_RETURN(s->expr, parse_or());  // no inline if: "if" filters the loop
      if (at_name("if")) {
        next();
        SHARDLM_ASSIGN_OR_RETURN(s->filter, parse_expr());
      }
      if (at_name("recursive")) return error(cur(), "recursive for loops are not supported");
      SHARDLM_TRY(expect_block_end());
      SHARDLM_TRY(parse_body(s->body, {"else", "endfor"}, end));
      if (end == "else") {
        SHARDLM_TRY(expect_block_end());
        SHARDLM_TRY(parse_body(s->else_body, {"endfor"}, end));
      }
      SHARDLM_TRY(expect_block_end());
      return s;
    }
    if (name == "set") {
      // Target: name, name.attr, or a, b (tuple of names).
      const Token& t0 = cur();
      SHARDLM_ASSIGN_OR_RETURN(std::string first, expect_name());
      ExprPtr target = node(Expr::Type::kName, t0);
      target->name = first;
      if (at_op(".")) {
        next();
        auto ga = node(Expr::Type::kGetAttr, t0);
        SHARDLM_ASSIGN_OR_RETURN(ga->name, expect_name());
        ga->children.push_back(std::move(target));
        target = std::move(ga);
      } else if (at_op(",")) {
        auto tup = node(Expr::Type::kTuple, t0);
        tup->children.push_back(std::move(target));
        while (at_op(",")) {
          next();
          auto n = node(Expr::Type::kName, cur());
          SHARDLM_ASSIGN_OR_RETURN(n->name, expect_name());
          tup->children.push_back(std::move(n));
        }
        target = std::move(tup);
      }
      if (at_op("=")) {
        next();
        s->type = Stmt::Type::kSet;
        s->target = std::move(target);
        SHARDLM_ASSIGN_OR_RETURN(s->expr, parse_tuple_expr());
        SHARDLM_TRY(expect_block_end());
        return s;
      }
      if (target->type != Expr::Type::kName) return error(cur(), "expected '=' after the set target");
      s->type = Stmt::Type::kSetBlock;
      s->text = target->name;
      if (at_op("|")) {
        SHARDLM_ASSIGN_OR_RETURN(s->filter, parse_filters(nullptr));
      }
      SHARDLM_TRY(expect_block_end());
      SHARDLM_TRY(parse_body(s->body, {"endset"}, end));
      SHARDLM_TRY(expect_block_end());
      return s;
    }
    if (name == "macro") {
      s->type = Stmt::Type::kMacro;
      SHARDLM_ASSIGN_OR_RETURN(s->text, expect_name());
      SHARDLM_TRY(expect_op("("));
      while (!at_op(")")) {
        SHARDLM_ASSIGN_OR_RETURN(std::string p, expect_name());
        s->names.push_back(p);
        ExprPtr def;
        if (at_op("=")) {
          next();
          SHARDLM_ASSIGN_OR_RETURN(def, parse_expr());
        }
        s->defaults.push_back(std::move(def));
        if (!at_op(",")) break;
        next();
      }
      SHARDLM_TRY(expect_op(")"));
      SHARDLM_TRY(expect_block_end());
      SHARDLM_TRY(parse_body(s->body, {"endmacro"}, end));
      if (at(Tok::kName)) next();  // {% endmacro name %}
      SHARDLM_TRY(expect_block_end());
      return s;
    }
    if (name == "break" || name == "continue") {
      s->type = name == "break" ? Stmt::Type::kBreak : Stmt::Type::kContinue;
      SHARDLM_TRY(expect_block_end());
      return s;
    }
    if (name == "filter") {
      s->type = Stmt::Type::kFilterBlock;
      SHARDLM_ASSIGN_OR_RETURN(s->filter, parse_filter_chain_after_name());
      SHARDLM_TRY(expect_block_end());
      SHARDLM_TRY(parse_body(s->body, {"endfilter"}, end));
      SHARDLM_TRY(expect_block_end());
      return s;
    }
    if (name == "generation") {  // transformers' AssistantTracker: plain content here
      s->type = Stmt::Type::kWith;
      SHARDLM_TRY(expect_block_end());
      SHARDLM_TRY(parse_body(s->body, {"endgeneration"}, end));
      SHARDLM_TRY(expect_block_end());
      return s;
    }
    if (name == "with") {
      s->type = Stmt::Type::kWith;
      while (at(Tok::kName)) {
        std::string n = cur().value;
        next();
        SHARDLM_TRY(expect_op("="));
        ExprPtr v;
        SHARDLM_ASSIGN_OR_RETURN(v, parse_expr());
        s->assignments.emplace_back(n, std::move(v));
        if (!at_op(",")) break;
        next();
      }
      SHARDLM_TRY(expect_block_end());
      SHARDLM_TRY(parse_body(s->body, {"endwith"}, end));
      SHARDLM_TRY(expect_block_end());
      return s;
    }
    if (name == "do") {
      s->type = Stmt::Type::kDo;
      SHARDLM_ASSIGN_OR_RETURN(s->expr, parse_tuple_expr());
      SHARDLM_TRY(expect_block_end());
      return s;
    }
    return error(tok, fmt::format("unsupported tag '{}'", name));
  }

  // {% filter name(args) | other %}: a filter chain applied to a null child.
  Expected<ExprPtr> parse_filter_chain_after_name() {
    // Reuse parse_filters by pretending a "|" precedes the first name.
    ExprPtr result;
    const Token& t = cur();
    auto f = node(Expr::Type::kFilter, t);
    SHARDLM_ASSIGN_OR_RETURN(f->name, expect_name());
    f->children.push_back(nullptr);
    if (at_op("(")) SHARDLM_TRY(parse_call_args(*f));
    result = std::move(f);
    if (at_op("|")) return parse_filters(std::move(result));
    return result;
  }

  // expr, expr, ... without parentheses -> tuple (as in {{ a, b }}).
  Expected<ExprPtr> parse_tuple_expr() {
    const Token& t = cur();
    SHARDLM_ASSIGN_OR_RETURN(ExprPtr first, parse_expr());
    if (!at_op(",")) return first;
    auto tup = node(Expr::Type::kTuple, t);
    tup->children.push_back(std::move(first));
    while (at_op(",")) {
      next();
      if (at(Tok::kBlockEnd) || at(Tok::kVarEnd)) break;
      SHARDLM_ASSIGN_OR_RETURN(ExprPtr e, parse_expr());
      tup->children.push_back(std::move(e));
    }
    return tup;
  }

  Expected<ExprPtr> parse_expr() {
    DepthGuard guard(this);
    SHARDLM_TRY(check_depth());
    const Token& t = cur();
    SHARDLM_ASSIGN_OR_RETURN(ExprPtr e, parse_or());
    while (at_name("if")) {
      next();
      auto c = node(Expr::Type::kCondExpr, t);
      SHARDLM_ASSIGN_OR_RETURN(ExprPtr cond, parse_or());
      ExprPtr other;
      if (at_name("else")) {
        next();
        SHARDLM_ASSIGN_OR_RETURN(other, parse_expr());
      }
      c->children.push_back(std::move(cond));
      c->children.push_back(std::move(e));
      c->children.push_back(std::move(other));
      e = std::move(c);
    }
    return e;
  }

  Expected<ExprPtr> parse_or() {
    SHARDLM_ASSIGN_OR_RETURN(ExprPtr l, parse_and());
    while (at_name("or")) {
      auto n = node(Expr::Type::kOr, cur());
      next();
      SHARDLM_ASSIGN_OR_RETURN(ExprPtr r, parse_and());
      n->children.push_back(std::move(l));
      n->children.push_back(std::move(r));
      l = std::move(n);
    }
    return l;
  }

  Expected<ExprPtr> parse_and() {
    SHARDLM_ASSIGN_OR_RETURN(ExprPtr l, parse_not());
    while (at_name("and")) {
      auto n = node(Expr::Type::kAnd, cur());
      next();
      SHARDLM_ASSIGN_OR_RETURN(ExprPtr r, parse_not());
      n->children.push_back(std::move(l));
      n->children.push_back(std::move(r));
      l = std::move(n);
    }
    return l;
  }

  Expected<ExprPtr> parse_not() {
    DepthGuard guard(this);
    SHARDLM_TRY(check_depth());
    if (at_name("not")) {
      auto n = node(Expr::Type::kNot, cur());
      next();
      SHARDLM_ASSIGN_OR_RETURN(ExprPtr e, parse_not());
      n->children.push_back(std::move(e));
      return n;
    }
    return parse_compare();
  }

  Expected<ExprPtr> parse_compare() {
    const Token& t = cur();
    SHARDLM_ASSIGN_OR_RETURN(ExprPtr first, parse_math1());
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (cur().type == Tok::kOp && (cur().value == "==" || cur().value == "!=" || cur().value == "<" ||
                                     cur().value == ">" || cur().value == "<=" || cur().value == ">=")) {
        op = cur().value;
        next();
      } else if (at_name("in")) {
        op = "in";
        next();
      } else if (at_name("not") && peek().type == Tok::kName && peek().value == "in") {
        op = "notin";
        next();
        next();
      } else {
        break;
      }
      if (!cmp) {
        cmp = node(Expr::Type::kCompare, t);
        cmp->children.push_back(std::move(first));
      }
      SHARDLM_ASSIGN_OR_RETURN(ExprPtr r, parse_math1());
      cmp->ops.push_back(op);
      cmp->children.push_back(std::move(r));
    }
    return cmp ? std::move(cmp) : std::move(first);
  }

  Expected<ExprPtr> binary_loop(Expected<ExprPtr> (Parser::*sub)(), std::initializer_list<std::string_view> ops) {
    SHARDLM_ASSIGN_OR_RETURN(ExprPtr l, (this->*sub)());
    while (cur().type == Tok::kOp) {
      bool match = false;
      for (auto o : ops) match = match || cur().value == o;
      if (!match) break;
      auto n = node(Expr::Type::kBinary, cur());
      n->name = cur().value;
      next();
      SHARDLM_ASSIGN_OR_RETURN(ExprPtr r, (this->*sub)());
      n->children.push_back(std::move(l));
      n->children.push_back(std::move(r));
      l = std::move(n);
    }
    return l;
  }
  Expected<ExprPtr> parse_math1() { return binary_loop(&Parser::parse_concat, {"+", "-"}); }
  Expected<ExprPtr> parse_concat() { return binary_loop(&Parser::parse_math2, {"~"}); }
  Expected<ExprPtr> parse_math2() { return binary_loop(&Parser::parse_pow, {"*", "/", "//", "%"}); }
  Expected<ExprPtr> parse_pow() { return binary_loop(&Parser::parse_unary_filtered, {"**"}); }
  Expected<ExprPtr> parse_unary_filtered() { return parse_unary(true); }

  Expected<ExprPtr> parse_unary(bool with_filter) {
    DepthGuard guard(this);
    SHARDLM_TRY(check_depth());
    ExprPtr e;
    if (at_op("-") || at_op("+")) {
      auto n = node(at_op("-") ? Expr::Type::kNeg : Expr::Type::kPos, cur());
      next();
      SHARDLM_ASSIGN_OR_RETURN(ExprPtr inner, parse_unary(false));
      n->children.push_back(std::move(inner));
      e = std::move(n);
    } else {
      SHARDLM_ASSIGN_OR_RETURN(e, parse_primary());
    }
    SHARDLM_ASSIGN_OR_RETURN(e, parse_postfix(std::move(e)));
    if (with_filter) return parse_filters(std::move(e));
    return e;
  }

  Expected<ExprPtr> parse_primary() {
    const Token& t = cur();
    switch (t.type) {
      case Tok::kName: {
        next();
        if (t.value == "true" || t.value == "True") return lit(t, Value::boolean(true));
        if (t.value == "false" || t.value == "False") return lit(t, Value::boolean(false));
        if (t.value == "none" || t.value == "None") return lit(t, Value::none());
        auto n = node(Expr::Type::kName, t);
        n->name = t.value;
        return n;
      }
      case Tok::kString: {
        std::string s;
        while (at(Tok::kString)) {  // adjacent literals concatenate
          s += cur().value;
          next();
        }
        return lit(t, Value::string(std::move(s)));
      }
      case Tok::kInt: {
        next();
        int64_t v = 0;
        auto r = std::from_chars(t.value.data(), t.value.data() + t.value.size(), v);
        if (r.ec != std::errc()) return lit(t, Value::real(std::strtod(t.value.c_str(), nullptr)));
        return lit(t, Value::integer(v));
      }
      case Tok::kFloat: {
        next();
        return lit(t, Value::real(std::strtod(t.value.c_str(), nullptr)));
      }
      case Tok::kOp: {
        if (t.value == "(") {
          next();
          if (at_op(")")) {
            next();
            return node(Expr::Type::kTuple, t);
          }
          SHARDLM_ASSIGN_OR_RETURN(ExprPtr e, parse_expr());
          if (at_op(",")) {
            auto tup = node(Expr::Type::kTuple, t);
            tup->children.push_back(std::move(e));
            while (at_op(",")) {
              next();
              if (at_op(")")) break;
              SHARDLM_ASSIGN_OR_RETURN(ExprPtr x, parse_expr());
              tup->children.push_back(std::move(x));
            }
            e = std::move(tup);
          }
          SHARDLM_TRY(expect_op(")"));
          return e;
        }
        if (t.value == "[") {
          next();
          auto l = node(Expr::Type::kList, t);
          while (!at_op("]")) {
            SHARDLM_ASSIGN_OR_RETURN(ExprPtr x, parse_expr());
            l->children.push_back(std::move(x));
            if (!at_op(",")) break;
            next();
          }
          SHARDLM_TRY(expect_op("]"));
          return l;
        }
        if (t.value == "{") {
          next();
          auto d = node(Expr::Type::kDict, t);
          while (!at_op("}")) {
            SHARDLM_ASSIGN_OR_RETURN(ExprPtr k, parse_expr());
            SHARDLM_TRY(expect_op(":"));
            SHARDLM_ASSIGN_OR_RETURN(ExprPtr v, parse_expr());
            d->children.push_back(std::move(k));
            d->children.push_back(std::move(v));
            if (!at_op(",")) break;
            next();
          }
          SHARDLM_TRY(expect_op("}"));
          return d;
        }
        break;
      }
      default: break;
    }
    return error(t, "expected an expression");
  }

  ExprPtr lit(const Token& t, Value v) {
    auto n = node(Expr::Type::kLiteral, t);
    n->literal = std::move(v);
    return n;
  }

  Expected<ExprPtr> parse_postfix(ExprPtr e) {
    while (true) {
      if (at_op(".")) {
        const Token& t = cur();
        next();
        if (at(Tok::kName)) {
          auto n = node(Expr::Type::kGetAttr, t);
          n->name = cur().value;
          next();
          n->children.push_back(std::move(e));
          e = std::move(n);
        } else if (at(Tok::kInt)) {  // foo.0 is foo[0]
          auto n = node(Expr::Type::kGetItem, t);
          n->children.push_back(std::move(e));
          n->children.push_back(lit(cur(), Value::integer(std::strtoll(cur().value.c_str(), nullptr, 10))));
          next();
          e = std::move(n);
        } else {
          return error(cur(), "expected an attribute name after '.'");
        }
      } else if (at_op("[")) {
        SHARDLM_ASSIGN_OR_RETURN(e, parse_subscript(std::move(e)));
      } else if (at_op("(")) {
        auto n = node(Expr::Type::kCall, cur());
        n->children.push_back(std::move(e));
        SHARDLM_TRY(parse_call_args(*n));
        e = std::move(n);
      } else {
        return e;
      }
    }
  }

  Expected<ExprPtr> parse_subscript(ExprPtr obj) {
    const Token& t = cur();
    next();  // [
    ExprPtr parts[3];
    int colons = 0;
    while (!at_op("]")) {
      if (at_op(":")) {
        if (++colons > 2) return error(cur(), "too many ':' in a slice");
        next();
        continue;
      }
      if (parts[colons]) return error(cur(), "expected ']' or ':'");
      SHARDLM_ASSIGN_OR_RETURN(parts[colons], parse_expr());
      if (at_op(",")) return error(cur(), "tuple subscripts are not supported");
    }
    next();  // ]
    if (colons == 0) {
      if (!parts[0]) return error(t, "empty subscript");
      auto n = node(Expr::Type::kGetItem, t);
      n->children.push_back(std::move(obj));
      n->children.push_back(std::move(parts[0]));
      return n;
    }
    auto n = node(Expr::Type::kSlice, t);
    n->children.push_back(std::move(obj));
    for (auto& p : parts) n->children.push_back(std::move(p));
    return n;
  }

  Status parse_call_args(Expr& call) {
    next();  // (
    while (!at_op(")")) {
      if (at_op("*") || at_op("**")) return error(cur(), "*args and **kwargs in calls are not supported");
      if (at(Tok::kName) && peek().type == Tok::kOp && peek().value == "=") {
        std::string k = cur().value;
        next();
        next();
        SHARDLM_ASSIGN_OR_RETURN(ExprPtr v, parse_expr());
        call.kwargs.emplace_back(k, std::move(v));
      } else {
        if (!call.kwargs.empty()) return error(cur(), "positional argument after keyword argument");
        SHARDLM_ASSIGN_OR_RETURN(ExprPtr v, parse_expr());
        call.children.push_back(std::move(v));
      }
      if (!at_op(",")) break;
      next();
    }
    return expect_op(")");
  }

  // | filter(args) ... and "is [not] test args", repeated.
  Expected<ExprPtr> parse_filters(ExprPtr e) {
    while (true) {
      if (at_op("|")) {
        next();
        auto f = node(Expr::Type::kFilter, cur());
        SHARDLM_ASSIGN_OR_RETURN(f->name, expect_name());
        while (at_op(".") && peek().type == Tok::kName) {  // dotted filter names
          next();
          f->name += "." + cur().value;
          next();
        }
        f->children.push_back(std::move(e));
        if (at_op("(")) SHARDLM_TRY(parse_call_args(*f));
        e = std::move(f);
      } else if (at_name("is")) {
        auto tn = node(Expr::Type::kTest, cur());
        next();
        if (at_name("not")) {
          tn->negated = true;
          next();
        }
        SHARDLM_ASSIGN_OR_RETURN(tn->name, expect_name());
        tn->children.push_back(std::move(e));
        if (at_op("(")) {
          SHARDLM_TRY(parse_call_args(*tn));
        } else if ((at(Tok::kName) || at(Tok::kString) || at(Tok::kInt) || at(Tok::kFloat) || at_op("[") ||
                    at_op("{")) &&
                   !at_name("else") && !at_name("or") && !at_name("and") && !at_name("is") && !at_name("if") &&
                   !at_name("in") && !at_name("not")) {
          SHARDLM_ASSIGN_OR_RETURN(ExprPtr arg, parse_primary());
          SHARDLM_ASSIGN_OR_RETURN(arg, parse_postfix(std::move(arg)));
          tn->children.push_back(std::move(arg));
        }
        e = std::move(tn);
      } else if (at_op("(")) {
        auto n = node(Expr::Type::kCall, cur());
        n->children.push_back(std::move(e));
        SHARDLM_TRY(parse_call_args(*n));
        e = std::move(n);
      } else {
        return e;
      }
    }
  }

  // Bounds recursion on hostile input ("((((...", deeply nested blocks).
  struct DepthGuard {
    Parser* p;
    explicit DepthGuard(Parser* parser) : p(parser) { ++p->depth_; }
    ~DepthGuard() { --p->depth_; }
  };
  Status check_depth() const {
    if (depth_ > kMaxNesting) return error(cur(), "nesting too deep");
    return Status::Ok();
  }
  static constexpr int kMaxNesting = 150;

  const std::vector<Token>& t_;
  size_t i_ = 0;
  int depth_ = 0;
};

}  // namespace

Expected<Body> parse(const std::vector<Token>& tokens) { return Parser(tokens).parse_all(); }

}  // namespace shardlm::jinja
