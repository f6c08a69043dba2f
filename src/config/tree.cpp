#include "config/tree.hpp"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <sstream>
#include <tuple>
#include <unordered_map>

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

void collector::file(const std::string& display) {
  if (std::find(files_.begin(), files_.end(), display) == files_.end()) files_.push_back(display);
}

void collector::add(const location& at, const std::string& path, const std::string& message) {
  for (auto& e : errors_)
    if (e.where().file == at.file && e.where().line == at.line && e.where().column == at.column)
      return;
  if (errors_.size() == limits::errors) throw errors(sorted(errors_), at);
  errors_.emplace_back(at, path.empty() ? message : path + ": " + message);
}

std::vector<error> collector::sorted(std::vector<error> all) const {
  auto rank = [&](const location& l) {
    auto it = std::find(files_.begin(), files_.end(), l.file);
    return std::tuple(it - files_.begin(), l.line, l.column);
  };
  std::stable_sort(all.begin(), all.end(), [&](const error& a, const error& b) {
    return rank(a.where()) < rank(b.where());
  });
  return all;
}

void collector::raise(const error* fatal) const {
  auto all = errors_;
  if (fatal) all.push_back(*fatal);
  throw errors(sorted(std::move(all)));
}

void report(collector* sink, const location& at, const std::string& path,
            const std::string& message) {
  if (!sink) fail(at, path, message);
  sink->add(at, path, message);
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

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// Skips [0-9]* from i; returns how many.
std::size_t digits(std::string_view s, std::size_t& i) {
  std::size_t from = i;
  while (i < s.size() && is_digit(s[i])) ++i;
  return i - from;
}

std::string too_long(std::size_t size) {
  return std::to_string(size) + " bytes long; the limit is " + std::to_string(limits::scalar_bytes);
}

}  // namespace

bool is_env_name(std::string_view s) {
  if (s.empty() || !(is_alpha(s[0]) || s[0] == '_')) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return is_alpha(c) || is_digit(c) || c == '_'; });
}

bool is_yaml_integer(std::string_view s) {
  std::size_t i = s.starts_with('-') || s.starts_with('+');
  return digits(s, i) > 0 && i == s.size();
}

bool is_yaml_number(std::string_view s) {
  std::size_t i = s.starts_with('-') || s.starts_with('+');
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (digits(s, i) == 0) return false;
  } else {
    if (digits(s, i) == 0) return false;
    if (i < s.size() && s[i] == '.') {
      ++i;
      digits(s, i);
    }
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
    if (digits(s, i) == 0) return false;
  }
  return i == s.size();
}

std::string expand(const std::string& text, const location& at, const std::string& path,
                   const env_lookup& env) {
  auto check = [&](const std::string& so_far) {
    if (so_far.size() > limits::scalar_bytes)
      fail(at, path,
           "'" + text + "' is more than " + std::to_string(limits::scalar_bytes) +
               " bytes long once expanded; the limit is " + std::to_string(limits::scalar_bytes));
  };
  std::string in = text;
  if (in == "~" || in.starts_with("~/")) {
    auto home = env("HOME");
    if (!home || home->empty()) fail(at, path, "'" + text + "' starts with ~ but HOME is not set");
    in = *home + in.substr(1);
    check(in);
  }
  std::string out;
  std::size_t pos = 0;
  while (true) {
    auto open = in.find("${", pos);
    if (open == std::string::npos) break;
    out.append(in, pos, open - pos);
    auto close = in.find('}', open + 2);
    if (close == std::string::npos) fail(at, path, "'" + text + "' has a ${ without a closing }");
    auto name = in.substr(open + 2, close - open - 2);
    if (!is_env_name(name))
      fail(at, path, "'${" + name + "}' is not a valid environment variable name");
    auto value = env(name);
    if (!value)
      fail(at, path, "environment variable " + name + " is not set (used in '" + text + "')");
    out += *value;
    check(out);
    pos = close + 1;
  }
  out.append(in, pos);
  check(out);
  return out;
}

namespace {

location mark_at(const YAML::Mark& m, const std::string& file) {
  if (m.line < 0) return {file, 1, 1};
  return {file, m.line + 1, m.column + 1};
}

// YAML 1.2 core schema for plain scalars; quoted scalars are always strings.
void infer(node& n) {
  const auto& t = n.text;
  if (t == "true" || t == "True" || t == "TRUE" || t == "false" || t == "False" || t == "FALSE") {
    n.type = kind::boolean;
    n.boolean = t[0] == 't' || t[0] == 'T';
  } else if (is_yaml_integer(t)) {
    n.type = kind::integer;
    n.number = std::strtod(t.c_str(), nullptr);
  } else if (is_yaml_number(t)) {
    n.type = kind::number;
    n.number = std::strtod(t.c_str(), nullptr);
  } else {
    n.type = kind::string;
  }
}

// A YAML node as the parser's events give it, before types and expansion.
struct raw {
  enum class type : uint8_t { null, scalar, list, map };
  type t = type::null;
  bool quoted = false;
  std::string value;
  YAML::Mark mark;
  std::vector<raw> children;  // a list's items; a map's keys and values, alternating
};

// Builds the raw tree from yaml-cpp's events rather than YAML::Load, so that every node is
// charged to the budget as it appears: YAML::Load shares an anchored node between its
// aliases, and any walk of its result multiplies it (a few hundred bytes of "billion
// laughs" expand to billions of nodes). Here an alias is copied only once the budget has
// room for all of it.
class reader final : public YAML::EventHandler {
 public:
  reader(const std::string& file, budget& spend) : file_(file), spend_(spend) {}

  std::optional<raw> root;

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}

  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    raw r;
    r.mark = mark;
    grow(1, 0, mark);
    finish(std::move(r), anchor, 1, 0);
  }

  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    raw r;
    r.t = raw::type::scalar;
    r.quoted = tag == "!" || tag == "tag:yaml.org,2002:str";
    r.value = value;
    r.mark = mark;
    grow(1, value.size(), mark);
    finish(std::move(r), anchor, 1, value.size());
  }

  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    auto it = anchors_.find(anchor);
    if (it == anchors_.end())
      throw error(mark_at(mark, file_),
                  "an alias inside the value of its own anchor would make that value endless");
    grow(it->second.nodes, it->second.text_bytes, mark);
    finish(raw(it->second.value), 0, it->second.nodes, it->second.text_bytes);
  }

  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    open(raw::type::list, mark, anchor);
  }
  void OnSequenceEnd() override { close(); }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    open(raw::type::map, mark, anchor);
  }
  void OnMapEnd() override { close(); }

 private:
  struct frame {
    raw value;
    YAML::anchor_t anchor;
    std::size_t nodes_before, text_before;
  };
  struct anchored {
    raw value;
    std::size_t nodes, text_bytes;
  };

  void charge(std::size_t nodes, std::size_t text, const YAML::Mark& mark) {
    if (nodes > spend_.nodes)
      throw error(mark_at(mark, file_),
                  "the config has too many nodes: the limit is " + std::to_string(limits::nodes) +
                      " keys, values, lists and maps in all files, with every alias expanded");
    if (text > spend_.text_bytes)
      throw error(mark_at(mark, file_),
                  "the config has too much text: the limit is " +
                      std::to_string(limits::text_bytes) +
                      " bytes of keys and values in all files, with every alias expanded");
    spend_.nodes -= nodes;
    spend_.text_bytes -= text;
  }

  // Nodes that become part of the tree.
  void grow(std::size_t nodes, std::size_t text, const YAML::Mark& mark) {
    charge(nodes, text, mark);
    nodes_ += nodes;
    text_ += text;
  }

  void open(raw::type t, const YAML::Mark& mark, YAML::anchor_t anchor) {
    if (stack_.size() >= limits::nesting)
      throw error(mark_at(mark, file_),
                  "maps and lists are nested more than " + std::to_string(limits::nesting) +
                      " deep; the limit is " + std::to_string(limits::nesting));
    std::size_t nodes_before = nodes_, text_before = text_;
    grow(1, 0, mark);
    raw r;
    r.t = t;
    r.mark = mark;
    stack_.push_back({std::move(r), anchor, nodes_before, text_before});
  }

  void close() {
    frame f = std::move(stack_.back());
    stack_.pop_back();
    finish(std::move(f.value), f.anchor, nodes_ - f.nodes_before, text_ - f.text_before);
  }

  void finish(raw r, YAML::anchor_t anchor, std::size_t nodes, std::size_t text) {
    if (anchor) {
      charge(nodes, text, r.mark);  // the copy kept for the aliases costs as much again
      anchors_[anchor] = {r, nodes, text};
    }
    if (stack_.empty())
      root = std::move(r);
    else
      stack_.back().value.children.push_back(std::move(r));
  }

  const std::string& file_;
  budget& spend_;
  std::vector<frame> stack_;
  std::unordered_map<YAML::anchor_t, anchored> anchors_;
  std::size_t nodes_ = 0, text_ = 0;  // in the tree so far, aliases expanded
};

// Stops at the first node of a second document.
struct second_document {
  YAML::Mark mark;
};
class probe final : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& m, YAML::anchor_t) override { throw second_document{m}; }
  void OnAlias(const YAML::Mark& m, YAML::anchor_t) override { throw second_document{m}; }
  void OnScalar(const YAML::Mark& m, const std::string&, YAML::anchor_t,
                const std::string&) override {
    throw second_document{m};
  }
  void OnSequenceStart(const YAML::Mark& m, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    throw second_document{m};
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& m, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    throw second_document{m};
  }
  void OnMapEnd() override {}
};

struct builder {
  const std::string& file;
  const parse_options& options;

  node build(const raw& y, const std::string& path, const location* key_at) {
    node n;
    n.at = mark_at(y.mark, file);
    switch (y.t) {
      case raw::type::null:
        // yaml-cpp marks an empty value at the next token; the key is where the eye goes.
        if (key_at) n.at = *key_at;
        n.type = kind::null;
        break;
      case raw::type::scalar:
        if (y.value.size() > limits::scalar_bytes)
          fail(n.at, path, "value is " + too_long(y.value.size()));
        n.text = options.expand ? expand(y.value, n.at, path, options.env) : y.value;
        if (y.quoted)
          n.type = kind::string;
        else
          infer(n);
        break;
      case raw::type::list:
        n.type = kind::list;
        n.items.reserve(y.children.size());
        for (std::size_t i = 0; i < y.children.size(); ++i)
          n.items.push_back(build(y.children[i], join(path, i), nullptr));
        break;
      case raw::type::map: {
        n.type = kind::map;
        std::unordered_map<std::string_view, std::size_t> seen;  // key -> index in entries
        n.entries.reserve(y.children.size() / 2);
        for (std::size_t i = 0; i + 1 < y.children.size(); i += 2) {
          const raw& k = y.children[i];
          location k_at = mark_at(k.mark, file);
          if (k.t != raw::type::scalar || k.value.empty())
            fail(k_at, path, "keys must be plain names");
          if (k.value.size() > limits::scalar_bytes)
            fail(k_at, path, "key is " + too_long(k.value.size()));
          auto [pos, fresh] = seen.try_emplace(k.value, n.entries.size());
          if (!fresh)
            fail(k_at, join(path, k.value),
                 "duplicate key '" + k.value + "' (first at " +
                     n.entries[pos->second].key_at.to_string() + ")");
          node value = build(y.children[i + 1], join(path, k.value), &k_at);
          n.entries.push_back({k.value, k_at, std::move(value)});
        }
        break;
      }
    }
    return n;
  }
};

}  // namespace

node parse(const std::string& text, const std::string& file, const parse_options& options) {
  budget own;
  reader r(file, options.spend ? *options.spend : own);
  try {
    std::istringstream in(text);
    YAML::Parser parser(in);
    if (parser.HandleNextDocument(r)) {
      probe second;
      parser.HandleNextDocument(second);
    }
  } catch (const YAML::Exception& e) {
    throw error(mark_at(e.mark, file), "YAML syntax error: " + e.msg);
  } catch (const second_document& d) {
    throw error(mark_at(d.mark, file),
                "a config file holds one YAML document; remove the second one (after ---)");
  }
  if (!r.root || r.root->t == raw::type::null) {
    node empty;
    empty.type = kind::map;
    empty.at = {file, 1, 1};
    return empty;
  }
  parse_options opts = options;
  if (!opts.env) opts.env = process_env();
  builder b{file, opts};
  return b.build(*r.root, "", nullptr);
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
