// Config files: JSON when the first non-blank character is '{', else one
// `key: value` per line. Keys are normalised so `max_num_seqs`,
// `max-num-seqs` and `--max-num-seqs` all name the same flag.
#include "serve/config_file.h"

#include <nlohmann/json.hpp>

#include <sstream>

namespace shardlm::serve {
namespace {

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

std::string unquote(std::string s) {
  if (s.size() >= 2 && (s.front() == '"' || s.front() == '\'') && s.back() == s.front()) return s.substr(1, s.size() - 2);
  return s;
}

std::string normalise_key(std::string k) {
  size_t i = k.find_first_not_of('-');
  k = i == std::string::npos ? std::string() : k.substr(i);
  for (char& c : k)
    if (c == '_') c = '-';
  return k;
}

// A scalar JSON value as the text a flag would take.
std::string scalar_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  return v.dump();
}

}  // namespace

Expected<std::vector<ConfigEntry>> parse_config_text(const std::string& text) {
  std::vector<ConfigEntry> out;
  const std::string t = trim(text);
  if (!t.empty() && t.front() == '{') {
    nlohmann::json j = nlohmann::json::parse(t, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return make_error(ErrorCode::kFormat, "config: not a valid JSON object");
    for (const auto& [k, v] : j.items()) {
      ConfigEntry e{normalise_key(k), {}, 0};
      if (v.is_null()) continue;
      if (v.is_object()) return make_error(ErrorCode::kFormat, "config: '{}' must be a scalar or a list", k);
      if (v.is_array()) {
        for (const auto& x : v) e.values.push_back(scalar_text(x));
      } else {
        e.values.push_back(scalar_text(v));
      }
      out.push_back(std::move(e));
    }
    return out;
  }
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    // Strip a comment ('#' outside quotes).
    char quote = 0;
    for (size_t i = 0; i < line.size(); ++i) {
      if (quote) {
        if (line[i] == quote) quote = 0;
      } else if (line[i] == '"' || line[i] == '\'') {
        quote = line[i];
      } else if (line[i] == '#') {
        line.resize(i);
        break;
      }
    }
    line = trim(line);
    if (line.empty() || line == "---") continue;
    size_t sep = line.find_first_of(":=");
    if (sep == std::string::npos)
      return make_error(ErrorCode::kFormat, "config line {}: expected 'key: value', got '{}'", n, line);
    ConfigEntry e{normalise_key(trim(line.substr(0, sep))), {}, n};
    if (e.key.empty()) return make_error(ErrorCode::kFormat, "config line {}: empty key", n);
    std::string value = trim(line.substr(sep + 1));
    if (value.size() >= 2 && value.front() == '[' && value.back() == ']') {
      std::stringstream items(value.substr(1, value.size() - 2));
      std::string item;
      while (std::getline(items, item, ','))
        if (!trim(item).empty()) e.values.push_back(unquote(trim(item)));
    } else {
      e.values.push_back(unquote(value));
    }
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace shardlm::serve
