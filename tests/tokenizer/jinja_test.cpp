// The Jinja interpreter, against what Python Jinja2 renders with
// trim_blocks=True, lstrip_blocks=True (how transformers renders chat templates).
#include <gtest/gtest.h>

#include "tokenizer/jinja.h"

namespace shardlm::jinja {
namespace {

std::string render(const std::string& src, const nlohmann::ordered_json& ctx = nlohmann::ordered_json::object()) {
  auto t = Template::parse(src);
  if (!t.ok()) return "PARSE ERROR: " + t.status().message();
  auto r = (*t)->render(ctx);
  if (!r.ok()) return "RENDER ERROR: " + r.status().message();
  return *r;
}

TEST(Jinja, WhitespaceControl) {
  EXPECT_EQ(render("{% if true %}\n  yes\n{% endif %}\nend"), "  yes\nend");
  EXPECT_EQ(render("a\n    {% if true %}b{% endif %}"), "a\nb");
  EXPECT_EQ(render("a   {%- if true -%}   b   {%- endif %}"), "ab");
  EXPECT_EQ(render("a\n  {{ 'x' }}"), "a\n  x");  // variables are not lstripped
  EXPECT_EQ(render("a\n  {%+ if true %}b{% endif %}"), "a\n  b");
  EXPECT_EQ(render("{% if true +%}\nb{% endif %}"), "\nb");
  EXPECT_EQ(render("abc\n"), "abc");  // one trailing newline is dropped
  EXPECT_EQ(render("abc\n\n"), "abc\n");
  EXPECT_EQ(render("a{# comment #}b"), "ab");
  EXPECT_EQ(render("a\n  {# c #}\nb"), "a\nb");
  EXPECT_EQ(render("{% raw %}{{ x }}{% endraw %}"), "{{ x }}");
  EXPECT_EQ(render("{{- '  a  ' -}}  \n b"), "  a  b");
  EXPECT_EQ(render("x\r\ny"), "x\ny");
}

TEST(Jinja, LoopsAndLoopVariables) {
  EXPECT_EQ(render("{% for x in [1,2,3] %}{{ loop.index }}{{ loop.first }}{{ loop.last }},{% endfor %}"),
            "1TrueFalse,2FalseFalse,3FalseTrue,");
  EXPECT_EQ(render("{% for x in 'ab' %}{{ loop.index0 }}{{ loop.revindex }}{{ loop.length }}{{ x }}{% endfor %}"),
            "022a112b");
  EXPECT_EQ(render("{% for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% endfor %}"),
            "02");
  EXPECT_EQ(render("{% for i in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{% for i in range(6) if i is even %}{{ i }}{{ ',' if not loop.last }}{% endfor %}"), "0,2,4");
  EXPECT_EQ(render("{% for i in [1,2,3] %}{{ loop.previtem is defined }}{{ loop.cycle('a','b') }}{% endfor %}"),
            "FalseaTruebTruea");
  EXPECT_EQ(render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}"), "a=1;b=2;");
  EXPECT_EQ(render("{% for a in [[1,2],[3,4]] %}{% for b in a %}{{ loop.depth }}{{ b }}{% endfor %}{% endfor %}"),
            "21222324");
  EXPECT_EQ(render("{% for x in undefined_thing %}x{% endfor %}ok"), "ok");
}

TEST(Jinja, SetScopesAndNamespace) {
  EXPECT_EQ(render("{% set ns = namespace(x=0) %}{% for i in range(4) %}{% set ns.x = ns.x + i %}{% endfor %}{{ ns.x }}"), "6");
  EXPECT_EQ(render("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}"), "21");
  EXPECT_EQ(render("{% set s %}a{{ 1 }}b{% endset %}[{{ s }}]"), "[a1b]");
  EXPECT_EQ(render("{% set a, b = [1, 2] %}{{ b }}{{ a }}"), "21");
  EXPECT_EQ(render("{% if true %}{% set y = 5 %}{% endif %}{{ y }}"), "5");
}

TEST(Jinja, Macros) {
  EXPECT_EQ(render("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Bob') }} {{ greet('Al', punct='?') }}"),
            "Hi Bob! Hi Al?");
  EXPECT_EQ(render("{% macro f(x) %}{{ x * 2 }}{% endmacro %}{{ f(3) | trim }}"), "6");
}

TEST(Jinja, Expressions) {
  EXPECT_EQ(render("{{ [1, 'a', none, true, 1.5, {'k': 'v'}, (1,)] }}"), "[1, 'a', None, True, 1.5, {'k': 'v'}, (1,)]");
  EXPECT_EQ(render("{{ 1/2 }} {{ 10/5 }} {{ 1e-5 }} {{ 1e16 }} {{ 0.1 + 0.2 }}"), "0.5 2.0 1e-05 1e+16 0.30000000000000004");
  EXPECT_EQ(render("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 2 * 'ab' }}"), "3 -4 2 1024 abab");
  EXPECT_EQ(render("{{ 'a' ~ 1 ~ none }}"), "a1None");
  EXPECT_EQ(render("{{ 'b' in 'abc' }} {{ 2 in [1,2] }} {{ 'k' in {'k':1} }} {{ 3 not in [1] }}"), "True True True True");
  EXPECT_EQ(render("{{ 'y' if false }}|{{ 'y' if true else 'n' }}"), "|y");
  EXPECT_EQ(render("{{ [1,2,3,4][::-1] }} {{ 'hello'[1:3] }} {{ [1,2,3][-1] }} {{ 'abc'[-2:] }} {{ [1,2,3][5] is defined }}"),
            "[4, 3, 2, 1] el 3 bc False");
  EXPECT_EQ(render("{{ 'a\\nb\\t\\'q\\'' }}"), "a\nb\t'q'");
  EXPECT_EQ(render("{{ not 1 == 2 and (3 > 2 or false) }}"), "True");
  EXPECT_EQ(render("{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }}"), "True False");
  EXPECT_EQ(render("{{ -3 | abs }} {{ 'x' | upper }}"), "3 X");
  EXPECT_EQ(render("{{ (1 + 2) * 3 }} {{ 10 - 2 - 3 }}"), "9 5");
  EXPECT_EQ(render("{{ x.y }}", {{"x", {{"y", "z"}}}}), "z");
  EXPECT_EQ(render("{{ x['y'] }}{{ x.missing }}", {{"x", {{"y", "z"}}}}), "z");
}

TEST(Jinja, Tests) {
  EXPECT_EQ(render("{{ x is defined }} {{ none is none }} {{ 1 is not none }} {{ 'a' is string }} {{ 3 is odd }}"),
            "False True True True True");
  EXPECT_EQ(render("{{ false is false }} {{ 0 is false }} {{ 6 is divisibleby 3 }} {{ {} is mapping }} {{ [1] is iterable }}"),
            "True False True True True");
  EXPECT_EQ(render("{{ 1 is number }} {{ 1.0 is float }} {{ 1 is integer }} {{ 'a' is in 'abc' }} {{ 2 is eq 2 }}"),
            "True True True True True");
}

TEST(Jinja, Filters) {
  EXPECT_EQ(render("{{ '  x  ' | trim }}|{{ [1,2] | length }}|{{ ['a','b'] | join(', ') }}|{% for k, v in {'b': 2} | items %}{{ k }}={{ v }}{% endfor %}"),
            "x|2|a, b|b=2");
  EXPECT_EQ(render("{{ {'a': 1, 'b': [true, none, '\u00e9\"\\n']} | tojson }}"), "{\"a\": 1, \"b\": [true, null, \"\u00e9\\\"\\n\"]}");
  EXPECT_EQ(render("{{ {'a': [1], 'b': {}} | tojson(indent=2) }}"), "{\n  \"a\": [\n    1\n  ],\n  \"b\": {}\n}");
  EXPECT_EQ(render("{{ '\u65e5\u672c' | tojson }}"), "\"\u65e5\u672c\"");
  EXPECT_EQ(render("{{ x | default('d') }} {{ '' | default('e', true) }} {{ [3,1,2] | sort | list }} {{ [1,2,2] | unique | list }}"),
            "d e [1, 2, 3] [1, 2]");
  EXPECT_EQ(render("{{ [1,2,3] | first }}{{ [1,2,3] | last }}{{ 'abc' | reverse }}{{ [1,2] | reverse | list }}"), "13cba[2, 1]");
  EXPECT_EQ(render("{{ 'hello world' | title }} {{ 'hELLO' | capitalize }} {{ 'a-b' | replace('-', '+') }}"), "Hello World Hello a+b");
  EXPECT_EQ(render("{{ '3' | int + 1 }} {{ '2.5' | float }} {{ 2.567 | round(2) }} {{ [1,2,3] | sum }} {{ [3,1] | max }}"),
            "4 2.5 2.57 6 3");
  nlohmann::ordered_json ctx = {{"msgs", {{{"role", "user"}, {"content", "a"}}, {{"role", "bot"}, {"content", "b"}},
                                          {{"role", "user"}, {"content", "c"}}}}};
  EXPECT_EQ(render("{{ msgs | selectattr('role', 'equalto', 'user') | map(attribute='content') | join(' ') }}", ctx), "a c");
  EXPECT_EQ(render("{{ msgs | rejectattr('role', 'eq', 'user') | list | length }}", ctx), "1");
  EXPECT_EQ(render("{{ 'a\nb' | indent(2) }}|{{ 'a\nb' | indent(2, true) }}"), "a\n  b|  a\n  b");
  EXPECT_EQ(render("{{ '<a>' | e }}"), "&lt;a&gt;");
}

TEST(Jinja, StringMethods) {
  EXPECT_EQ(render("{{ ' ab '.strip() }}{{ 'abc'.startswith('ab') }}{{ 'a,b'.split(',') }}{{ 'xx\\n'.rstrip('\\n') }}"),
            "abTrue['a', 'b']xx");
  EXPECT_EQ(render("{{ '\\n\\nx'.lstrip('\\n') }}|{{ 'a b  c'.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'abc'.endswith(('x', 'c')) }}"),
            "x|['a', 'b', 'c']|['a', 'b c']|True");
  EXPECT_EQ(render("{{ 'Hi'.upper() }}{{ 'Hi'.lower() }}{{ 'a-b'.replace('-', '') }}{{ 'abc'.find('c') }}{{ '{} {}'.format(1, 'x') }}"),
            "HIhiab21 x");
  EXPECT_EQ(render("{{ d.get('a') }} {{ d.get('z', 0) }} {{ d.keys() | list }} {{ d.values() | list }}",
                   {{"d", {{"a", 1}, {"b", 2}}}}),
            "1 0 ['a', 'b'] [1, 2]");
  EXPECT_EQ(render("{{ '</think>' in c }} {{ c.split('</think>')[-1].lstrip('\\n') }}", {{"c", "<think>x</think>\n\nans"}}),
            "True ans");
}

TEST(Jinja, Errors) {
  std::string e = render("{{ raise_exception('bad role') }}");
  EXPECT_NE(e.find("RENDER ERROR"), std::string::npos) << e;
  EXPECT_NE(e.find("raise_exception: bad role"), std::string::npos) << e;
  e = render("a\n\n{% include 'x.j2' %}");
  EXPECT_NE(e.find("line 3"), std::string::npos) << e;
  EXPECT_NE(e.find("unsupported tag 'include'"), std::string::npos) << e;
  e = render("{% for x in y %}");
  EXPECT_NE(e.find("endfor"), std::string::npos) << e;
  e = render("{{ 1 + }}");
  EXPECT_NE(e.find("line 1, column 8"), std::string::npos) << e;
  e = render("{{ foo.bar }}");
  EXPECT_NE(e.find("'foo' is undefined"), std::string::npos) << e;
  EXPECT_NE(e.find("line 1"), std::string::npos) << e;
  e = render("{{ 'a' + 1 }}");
  EXPECT_NE(e.find("RENDER ERROR"), std::string::npos) << e;
  e = render("{% if x %}{% endfor %}");
  EXPECT_NE(e.find("PARSE ERROR"), std::string::npos) << e;
  e = render("{{ x | nosuchfilter }}");
  EXPECT_NE(e.find("unknown filter 'nosuchfilter'"), std::string::npos) << e;
  e = render("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}");
  EXPECT_NE(e.find("recursion"), std::string::npos) << e;
}

// Templates the fuzzer (or a hostile --chat-template) can write: each ends in
// an error naming the bound it hit, within a bounded time and memory, instead
// of a hang, an out-of-memory kill or a stack overflow.
TEST(Jinja, RunawayTemplatesEndInErrors) {
  struct Case {
    const char* src;
    const char* error;  // expected in the message
  };
  const Case cases[] = {
      // 45 references to a 2 MB string, printed whole.
      {"{% set a = 'x' * 2000000 %}{% set l = [a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a] %}{{ l }}",
       "exceeds 64 MiB"},
      // An O(n) filter on a large string in a loop.
      {"{% set a = 'x' * 20000000 %}{% for i in range(100000) %}{{ a|length }}{% endfor %}", "work budget"},
      // Many large lists.
      {"{% set l = [range(999999), range(999999), range(999999), range(999999)] %}", "work budget"},
      // Steps: nested loops doing nothing, and one long expression evaluated again and again.
      {"{% for i in range(100000) %}{% for j in range(100) %}{% endfor %}{% endfor %}", "budget"},
      {"{% for i in range(999) %}{% for j in range(999) %}{{ 1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1 }}{% endfor %}{% endfor %}", "budget"},
      // A quadratic filter.
      {"{{ range(300000)|unique|length }}", "work budget"},
      // Sizes from arguments.
      {"{{ 'a'|indent(1000000000) }}", "exceeds 64 MiB"},
      {"{{ [1, 2, 3]|batch(1000000000, 'x')|list }}", "exceeds 64 MiB"},
      {"{{ [1]|tojson(indent=1000000000) }}", "indent larger than 1024"},
      {"{{ ('<' * 20000000)|e }}", "exceeds 64 MiB"},
      // A structure that doubles at every level (2^30 paths).
      {"{% set a = [1] %}{% for i in range(30) %}{% set a = [a, a] %}{{ '' }}{% endfor %}"
       "{% set a = [1, 1] %}{% set a = [a, a] %}{% set a = [a, a] %}{% set a = [a, a] %}{% set a = [a, a] %}{% set a = [a, a] %}"
       "{% set a = [a, a] %}{% set a = [a, a] %}{% set a = [a, a] %}{% set a = [a, a] %}{% set a = [a, a] %}{% set a = [a, a] %}"
       "{% set a = [a, a] %}{% set a = [a, a] %}{% set a = [a, a] %}{% set a = [a, a] %}{% set a = [a, a] %}{% set a = [a, a] %}"
       "{% set a = [a, a] %}{% set a = [a, a] %}{% set a = [a, a] %}{% set a = [a, a] %}{% set a = [a, a] %}{% set a = [a, a] %}{{ a == a }}",
       "exceeds 64 MiB"},
      // A namespace that holds itself, serialised.
      {"{% set ns = namespace(a=1) %}{% set ns.self = ns %}{{ ns|tojson }}", "circular reference"},
  };
  for (const auto& c : cases) {
    std::string e = render(c.src);
    EXPECT_EQ(e.rfind("RENDER ERROR", 0), 0u) << c.src << "\n -> " << e.substr(0, 200);
    EXPECT_NE(e.find(c.error), std::string::npos) << c.src << "\n -> " << e.substr(0, 200);
  }
}

// Numbers past int64 (a literal too long becomes a float) used where an
// integer is needed: clamped like Python's unbounded ints would behave in a
// slice, never an undefined conversion or overflow (found by CI's fuzz run;
// the ASan/UBSan build runs this test).
TEST(Jinja, HugeNumbersAreClampedNotUndefined) {
  EXPECT_EQ(render("{{ 'abcdef'[3:92222222222222222222222222222222222222] }}|{{ 'abcdef'[-99999999999999999999999999:2] }}"),
            "def|ab");
  EXPECT_EQ(render("{{ 'abcdef'[1::4611686018427387904] }}|{{ 'abcdef'[4::-9223372036854775807] }}"), "b|e");
  EXPECT_EQ(render("{{ 1e300|int }} {{ -1e300|int }} {{ 'nan'|int }} {{ '1e300'|int }}"),
            "9223372036854775807 -9223372036854775808 0 9223372036854775807");
  EXPECT_EQ(render("{{ range(9223372036854775800, 9223372036854775807, 5)|list }}"),
            "[9223372036854775800, 9223372036854775805]");
  EXPECT_EQ(render("{{ (-9223372036854775807 - 1) is divisibleby(-1) }}"), "True");
  for (const char* src : {"{{ (-9223372036854775807 - 1)|abs }}", "{{ -(-9223372036854775807 - 1) }}"}) {
    std::string e = render(src);
    EXPECT_NE(e.find("integer overflow"), std::string::npos) << src << " -> " << e;
  }
}

// What the bounds must not break: strings are shared, so passing a large one
// around is free; self-holding namespaces print like Python's recursive repr;
// searches are linear-time; string indexing does not explode the string.
TEST(Jinja, LargeValuesWithinBounds) {
  EXPECT_EQ(render("{% set a = 'x' * 30000000 %}{% set ns = namespace(b='') %}{% for i in range(100000) %}{% set ns.b = a %}{% endfor %}"
                   "{{ ns.b|length }}"),
            "30000000");
  EXPECT_EQ(render("{% set h = 'a' * 4000000 %}{% set n = 'a' * 2000000 ~ 'b' %}{{ n in h }} {{ h.find(n) }} {{ h.rfind(n) }} "
                   "{{ h.count(n) }} {{ h.replace(n, 'x')|length }} {{ h.split(n)|length }} {{ h.rfind('a') }}"),
            "False -1 -1 0 4000000 1 3999999");
  EXPECT_EQ(render("{% set a = 'é' * 1000000 %}{{ a[500000] }}{{ a[-1] }}{{ a[10:13] }} {{ a|reverse|length }}"), "ééééé 1000000");
  EXPECT_EQ(render("{{ 'ab' * 3 }}|{{ 'ab' * 0 }}|{{ '' * 5 }}|{{ [1] * 3 }}"), "ababab|||[1, 1, 1]");
  EXPECT_EQ(render("{{ '  x  '|trim }}|{{ '  x  '.lstrip() }}|{{ '  x  '.rstrip() }}|{{ 'xxhixx'.strip('x') }}|{{ '   '.strip() }}|{{ ''.strip() }}|"),
            "x|x  |  x|hi|||");
  std::string r = render("{% set ns = namespace(a=1) %}{% set ns.self = ns %}{{ ns == ns }} {{ ns.self.self.a }} {{ ns }}");
  EXPECT_EQ(r.rfind("True 1 <Namespace {'a': 1, 'self': <Namespace {", 0), 0u) << r.substr(0, 200);
  EXPECT_NE(r.find("{...}"), std::string::npos);
}

TEST(Jinja, ChatTemplateShapes) {
  // The Llama-3 style: filter binds tighter than +.
  const char* llama = "{% for m in messages %}{% set c = '<|h|>' + m['role'] + '\\n\\n' + m['content'] | trim + '<|e|>' %}"
                      "{% if loop.index0 == 0 %}{% set c = bos_token + c %}{% endif %}{{ c }}{% endfor %}";
  nlohmann::ordered_json ctx = {{"messages", {{{"role", "user"}, {"content", " hi "}}}}, {"bos_token", "<s>"}};
  EXPECT_EQ(render(llama, ctx), "<s><|h|>user\n\nhi<|e|>");
  const char* qwenish =
      "{%- for message in messages %}\n"
      "    {%- if message.role == 'user' %}\n"
      "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}\n"
      "    {%- endif %}\n"
      "{%- endfor %}\n"
      "{%- if add_generation_prompt %}\n"
      "    {{- '<|im_start|>assistant\\n' }}\n"
      "{%- endif %}\n";
  ctx["add_generation_prompt"] = true;
  EXPECT_EQ(render(qwenish, ctx), "<|im_start|>user\n hi <|im_end|>\n<|im_start|>assistant\n");
}

}  // namespace
}  // namespace shardlm::jinja
