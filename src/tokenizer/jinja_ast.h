// Syntax tree of a parsed Jinja template.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/jinja_value.h"

namespace shardlm::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Type {
    kLiteral,   // literal
    kName,      // name
    kList,      // children
    kTuple,     // children
    kDict,      // children: key0, value0, key1, value1, ...
    kGetAttr,   // children[0] . name
    kGetItem,   // children[0] [ children[1] ]
    kSlice,     // children[0] [ children[1] : children[2] : children[3] ] (null = omitted)
    kCall,      // children[0] ( children[1..] , kwargs )
    kFilter,    // children[0] | name ( children[1..], kwargs )
    kTest,      // children[0] is [not] name ( children[1..], kwargs )
    kNeg,       // - children[0]
    kPos,       // + children[0]
    kNot,       // not children[0]
    kBinary,    // children[0] name children[1]   (+ - * / // % ** ~)
    kAnd,
    kOr,
    kCompare,   // children[0] ops[k] children[k+1] ...
    kCondExpr,  // children[1] if children[0] else children[2] (may be null)
  };
  Type type;
  int line = 0, col = 0;
  Value literal;
  std::string name;
  bool negated = false;
  std::vector<ExprPtr> children;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;  // kCompare
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Stmt {
  enum class Type { kText, kOutput, kIf, kFor, kSet, kSetBlock, kMacro, kBreak, kContinue, kFilterBlock, kWith, kDo };
  Type type;
  int line = 0, col = 0;
  std::string text;          // kText; macro name; kSetBlock target name
  ExprPtr expr;              // kOutput, kDo; kSet value; kFor iterable
  ExprPtr target;            // kSet target (name, tuple of names, or ns.attr)
  std::vector<std::string> names;  // kFor loop variables; kMacro parameter names
  std::vector<ExprPtr> defaults;   // kMacro parameter defaults (null = none)
  ExprPtr filter;            // kFor "if" filter; kSetBlock / kFilterBlock filter (a kFilter on a null child)
  std::vector<std::pair<ExprPtr, Body>> branches;  // kIf: (cond or null for else, body)
  Body body;                 // kFor, kMacro, kSetBlock, kFilterBlock, kWith
  Body else_body;            // kFor
  std::vector<std::pair<std::string, ExprPtr>> assignments;  // kWith
};

}  // namespace shardlm::jinja
