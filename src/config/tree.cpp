#include "config/tree.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <regex>

namespace tprosshy::config::detail {

const node* node::find(std::string_view key) const {
  for (auto& e : entries)
    if (e.key == key) return &e.value;
  return nullptr;
}

node* node::find(std::string_view key) {
  for (auto& e : entries)
    if (e.key == key) return &e.value;
  return nullptr;
}

void fail(const location& at, const std::string& path, const std::string& message) {
  throw error(at, path.empty() ? message : path + ": " + message);
}

std::string join(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

std::string join(const std::string& path, std::size_t index) {
  return path + "[" + std::to_string(index) + "]";
}

env_lookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    if (const char* v = std::getenv(name.c_str())) return std::string(v);
    return std::nullopt;
  };
}

std::string expand(const std::string& text, const location& at, const std::string& path,
                   const env_lookup& env) {
  std::string in = text;
  if (in == "~" || in.starts_with("~/")) {
    auto home = env("HOME");
    if (!home || home->empty()) fail(at, path, "'" + text + "' starts with ~ but HOME is not set");
    in = *home + in.substr(1);
  }
  std::string out;
  std::size_t pos = 0;
  while (true) {
    auto open = in.find("${", pos);
    if (open == std::string::npos) break;
    out += in.substr(pos, open - pos);
    auto close = in.find('}', open + 2);
    if (close == std::string::npos) fail(at, path, "'" + text + "' has a ${ without a closing }");
    auto name = in.substr(open + 2, close - open - 2);
    static const std::regex valid("[A-Za-z_][A-Za-z0-9_]*");
    if (!std::regex_match(name, valid))
      fail(at, path, "'${" + name + "}' is not a valid environment variable name");
    auto value = env(name);
    if (!value)
      fail(at, path, "environment variable " + name + " is not set (used in '" + text + "')");
    out += *value;
    pos = close + 1;
  }
  return out + in.substr(pos);
}

namespace {

location mark_at(const YAML::Mark& m, const std::string& file) {
  if (m.line < 0) return {file, 1, 1};
  return {file, m.line + 1, m.column + 1};
}

// YAML 1.2 core schema for plain scalars; quoted scalars are always strings.
void infer(node& n) {
  static const std::regex integer("[-+]?[0-9]+");
  static const std::regex number("[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?");
  const auto& t = n.text;
  if (t == "true" || t == "True" || t == "TRUE" || t == "false" || t == "False" || t == "FALSE") {
    n.type = kind::boolean;
    n.boolean = t[0] == 't' || t[0] == 'T';
  } else if (std::regex_match(t, integer)) {
    n.type = kind::integer;
    n.number = std::strtod(t.c_str(), nullptr);
  } else if (std::regex_match(t, number)) {
    n.type = kind::number;
    n.number = std::strtod(t.c_str(), nullptr);
  } else {
    n.type = kind::string;
  }
}

struct builder {
  const std::string& file;
  const parse_options& options;

  node build(const YAML::Node& y, const std::string& path, const location* key_at) {
    node n;
    n.at = mark_at(y.Mark(), file);
    switch (y.Type()) {
      case YAML::NodeType::Undefined:
      case YAML::NodeType::Null:
        // yaml-cpp marks an empty value at the next token; the key is where the eye goes.
        if (key_at) n.at = *key_at;
        n.type = kind::null;
        break;
      case YAML::NodeType::Scalar: {
        n.text = y.Scalar();
        bool quoted = y.Tag() == "!" || y.Tag() == "tag:yaml.org,2002:str";
        if (options.expand) n.text = expand(n.text, n.at, path, options.env);
        if (quoted)
          n.type = kind::string;
        else
          infer(n);
        break;
      }
      case YAML::NodeType::Sequence:
        n.type = kind::list;
        for (std::size_t i = 0; i < y.size(); ++i)
          n.items.push_back(build(y[i], join(path, i), nullptr));
        break;
      case YAML::NodeType::Map:
        n.type = kind::map;
        for (auto it = y.begin(); it != y.end(); ++it) {
          location k_at = mark_at(it->first.Mark(), file);
          if (!it->first.IsScalar() || it->first.Scalar().empty())
            fail(k_at, path, "keys must be plain names");
          std::string key = it->first.Scalar();
          for (auto& e : n.entries)
            if (e.key == key)
              fail(k_at, join(path, key),
                   "duplicate key '" + key + "' (first at " + e.key_at.to_string() + ")");
          node value = build(it->second, join(path, key), &k_at);
          n.entries.push_back({key, k_at, std::move(value)});
        }
        break;
    }
    return n;
  }
};

}  // namespace

node parse(const std::string& text, const std::string& file, const parse_options& options) {
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(text);
  } catch (const YAML::Exception& e) {
    throw error(mark_at(e.mark, file), "YAML syntax error: " + e.msg);
  }
  if (docs.size() > 1)
    throw error(mark_at(docs[1].Mark(), file),
                "a config file holds one YAML document; remove the second one (after ---)");
  if (docs.empty() || docs[0].IsNull()) {
    node empty;
    empty.type = kind::map;
    empty.at = {file, 1, 1};
    return empty;
  }
  parse_options opts = options;
  if (!opts.env) opts.env = process_env();
  builder b{file, opts};
  return b.build(docs[0], "", nullptr);
}

std::string describe(const node& n) {
  switch (n.type) {
    case kind::null:
      return "an empty value";
    case kind::boolean:
      return std::string("boolean ") + (n.boolean ? "true" : "false");
    case kind::integer:
      return "integer " + n.text;
    case kind::number:
      return "number " + n.text;
    case kind::string:
      return "string '" + n.text + "'";
    case kind::list:
      return "a list";
    case kind::map:
      return "a map";
  }
  return "?";
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

std::optional<std::string> closest(std::string_view word, const std::vector<std::string>& options) {
  std::optional<std::string> best;
  std::size_t best_d = 3;
  for (auto& o : options) {
    auto d = edit_distance(word, o);
    // A one-letter word is "close" to everything short; demand some overlap.
    if (d < best_d && d < std::max(word.size(), o.size())) {
      best = o;
      best_d = d;
    }
  }
  return best;
}

}  // namespace tprosshy::config::detail
