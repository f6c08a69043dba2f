#pragma once
// Internal to config/: a YAML document as a plain tree whose every node remembers the file,
// line and column it came from, so errors survive includes and merging.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"

namespace tprosshy::config::detail {

enum class kind { null, boolean, integer, number, string, list, map };

struct entry;

struct node {
  kind type = kind::null;
  std::string text;  // scalars: the text after expansion
  bool boolean = false;
  double number = 0;  // integer and number
  std::vector<node> items;
  std::vector<entry> entries;  // in document order
  location at;

  bool is_scalar() const { return type != kind::list && type != kind::map; }
  const node* find(std::string_view key) const;
  node* find(std::string_view key);
};

struct entry {
  std::string key;
  location key_at;
  node value;
};

// Looks up environment variables; tests inject their own.
using env_lookup = std::function<std::optional<std::string>(const std::string&)>;
env_lookup process_env();

// What the files of one load may still spend (config::limits): every node and every byte of
// key or value text counts, including each copy an alias makes.
struct budget {
  std::size_t nodes = limits::nodes;
  std::size_t text_bytes = limits::text_bytes;
};

struct parse_options {
  bool expand = true;       // ${VAR} and a leading ~ in scalar values (not in keys)
  env_lookup env;           // defaults to process_env()
  budget* spend = nullptr;  // shared by the files of one load; nullptr: a fresh budget
};

// Parses one YAML document. An empty document is an empty map at file:1:1. Throws
// config::error for syntax errors, duplicate keys, non-scalar keys, unset variables and
// anything past config::limits (scalar length, nesting, nodes and text with aliases
// expanded). Never uses std::regex: its recursion overflows the stack on long input.
node parse(const std::string& text, const std::string& file, const parse_options& options = {});

// Hand-written matchers, linear in the input.
bool is_env_name(std::string_view s);      // [A-Za-z_][A-Za-z0-9_]*
bool is_yaml_integer(std::string_view s);  // [-+]?[0-9]+
bool is_yaml_number(std::string_view s);   // [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?

// Expands ${VAR} and a leading ~ / ~/ ; `path` names the key in errors.
std::string expand(const std::string& text, const location& at, const std::string& path,
                   const env_lookup& env);

// "a map", "a list", "string 'x'", ...: the node as an error message names it.
std::string describe(const node& n);

// Levenshtein distance, for did-you-mean suggestions.
std::size_t edit_distance(std::string_view a, std::string_view b);
// The closest candidate within distance 2, if any.
std::optional<std::string> closest(std::string_view word, const std::vector<std::string>& options);

// Throws config::error "path: message" at `at` (just "message" when path is empty).
[[noreturn]] void fail(const location& at, const std::string& path, const std::string& message);

// The mistakes a load can go on after (the schema's and the loader's own checks); the others
// (syntax, includes, limits) still stop it at once.
class collector {
 public:
  // Files in the order they are read: errors are sorted by it, then by line and column.
  void file(const std::string& display);
  // Records "path: message" at `at`, unless an error is already recorded there (a mistake
  // often shows through more than one check). One past limits::errors throws errors.
  void add(const location& at, const std::string& path, const std::string& message);
  bool empty() const { return errors_.empty(); }
  // Throws config::errors with everything recorded; with `fatal` too, if given.
  [[noreturn]] void raise(const error* fatal = nullptr) const;

 private:
  std::vector<error> sorted(std::vector<error> all) const;

  std::vector<error> errors_;
  std::vector<std::string> files_;
};

// config::load(), keeping the merged tree it built the config from (includes merged, the
// schema checked, ${VAR} and ~ expanded; defaults not applied).
config load_tree(const std::filesystem::path& file, node& root);

// With a collector: records the mistake and returns. Without: fail().
void report(collector* sink, const location& at, const std::string& path,
            const std::string& message);

// "profiles" + "corp" -> "profiles.corp"; "subnets" + 1 -> "subnets[1]".
std::string join(const std::string& path, std::string_view key);
std::string join(const std::string& path, std::size_t index);

}  // namespace tprosshy::config::detail
