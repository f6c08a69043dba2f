#pragma once
// Internal to config/: validates a config tree against schemas/tprosshy.schema.json.
// Supports the JSON Schema (2020-12) keywords the schema uses; an unsupported keyword in
// the schema is a programming error (std::logic_error), so nothing is silently ignored.
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "config/tree.hpp"

namespace tprosshy::config::detail {

// The hand-written matcher of a pattern the schema uses (std::regex is never run on config
// input); std::logic_error for a pattern without one.
bool (*pattern_matcher(std::string_view pattern))(std::string_view);

class schema {
 public:
  explicit schema(node document);

  // The schema compiled into the binary.
  static const schema& builtin();

  struct options {
    // Off for an included file on its own: it may be partial, so `required` waits for the
    // merged result.
    bool check_required = true;
    // Where violations go; without a sink the first one throws config::error.
    collector* sink = nullptr;
    // Receives every node the schema rejects (a value of the wrong shape, the value of an
    // unknown key, a map missing a required key), so later checks can leave them out.
    std::unordered_set<const node*>* rejected = nullptr;
  };

  // Every violation in document order, to opts.sink; or throws config::error for the first.
  void validate(const node& value, const options& opts) const;
  void validate(const node& value) const { validate(value, options{}); }

  // The subschema at a JSON pointer such as "#/properties/include" ($ref-resolved).
  const node& at(const std::string& pointer) const;
  // Validates `value` against the subschema at `pointer`, naming it `path` in errors.
  void validate_at(const std::string& pointer, const node& value, const std::string& path,
                   const options& opts) const;

  const node& document() const { return doc_; }

 private:
  // False when `v` itself breaks the schema (it is then in opts.rejected).
  bool check(const node& s, const node& v, const std::string& path, const location* key_at,
             const options& opts) const;
  const node& resolve(const node& s) const;
  void check_keywords(const node& s, const std::string& where) const;

  node doc_;
};

}  // namespace tprosshy::config::detail
