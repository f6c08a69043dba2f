#include "config/schema.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <stdexcept>
#include <unordered_map>

#include "schema_text.hpp"

namespace tprosshy::config::detail {

namespace {

const std::set<std::string> annotations = {
    "$schema", "$id",      "$comment", "title",      "description",
    "default", "examples", "x-hint",   "deprecated", "markdownDescription"};
const std::set<std::string> assertions = {
    "type",          "enum",      "properties",    "additionalProperties",
    "propertyNames", "required",  "minProperties", "items",
    "minItems",      "maxItems",  "uniqueItems",   "pattern",
    "minLength",     "maxLength", "minimum",       "maximum",
    "$ref",          "$defs"};

std::string type_name(const std::string& t) {
  if (t == "object") return "a map";
  if (t == "array") return "a list";
  if (t == "string") return "a string";
  if (t == "integer") return "an integer";
  if (t == "number") return "a number";
  if (t == "boolean") return "true or false";
  if (t == "null") return "nothing";
  return t;
}

bool has_type(const node& v, const std::string& t) {
  switch (v.type) {
    case kind::null:
      return t == "null";
    case kind::boolean:
      return t == "boolean";
    case kind::integer:
      return t == "integer" || t == "number";
    case kind::number:
      return t == "number";
    case kind::string:
      return t == "string";
    case kind::list:
      return t == "array";
    case kind::map:
      return t == "object";
  }
  return false;
}

bool same_scalar(const node& a, const node& b) {
  if (!a.is_scalar() || !b.is_scalar()) return false;
  bool a_num = a.type == kind::integer || a.type == kind::number;
  bool b_num = b.type == kind::integer || b.type == kind::number;
  if (a_num || b_num) return a_num && b_num && a.number == b.number;
  if (a.type != b.type) return false;
  if (a.type == kind::boolean) return a.boolean == b.boolean;
  return a.text == b.text;
}

std::string show(const node& v) {
  return v.type == kind::string ? "'" + v.text + "'" : v.is_scalar() ? v.text : describe(v);
}

bool is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }  // std::regex's \s
bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool is_label_char(char c) {
  return is_lower_alnum(c) || (c >= 'A' && c <= 'Z') || c == '_' || c == '-';
}

// ^[^/\s:]{1,15}$
bool interface_name(std::string_view s) {
  return !s.empty() && s.size() <= 15 && std::none_of(s.begin(), s.end(), [](char c) {
    return c == '/' || c == ':' || is_space(c);
  });
}

// ^[a-z0-9_-]{1,32}$
bool profile_name(std::string_view s) {
  return !s.empty() && s.size() <= 32 && std::all_of(s.begin(), s.end(), [](char c) {
    return is_lower_alnum(c) || c == '_' || c == '-';
  });
}

// ^[a-z_][a-z0-9_.-]{0,31}$: an account name (ssh_user) as useradd makes them.
bool account_name(std::string_view s) {
  return !s.empty() && s.size() <= 32 && (s[0] == '_' || (s[0] >= 'a' && s[0] <= 'z')) &&
         std::all_of(s.begin(), s.end(),
                     [](char c) { return is_lower_alnum(c) || c == '_' || c == '-' || c == '.'; });
}

// ^(\.|[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?)$: labels joined by single dots, one trailing dot
// allowed, or "." alone.
bool domain_name(std::string_view s) {
  if (s == ".") return true;
  if (s.ends_with('.')) s.remove_suffix(1);
  bool label = false;  // the current label has a character
  for (char c : s) {
    if (c == '.') {
      if (!label) return false;
      label = false;
    } else if (is_label_char(c)) {
      label = true;
    } else {
      return false;
    }
  }
  return label;
}

// ^[^-\s]\S*$
bool ssh_destination(std::string_view s) {
  return !s.empty() && s[0] != '-' && std::none_of(s.begin(), s.end(), is_space);
}

// ^[0-9]{1,9}(ms|s|m|h)?$
bool duration(std::string_view s) {
  std::size_t digits = 0;
  while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') ++digits;
  if (digits == 0 || digits > 9) return false;
  const auto unit = s.substr(digits);
  return unit.empty() || unit == "ms" || unit == "s" || unit == "m" || unit == "h";
}

// The schema's patterns, each with a hand-written matcher: std::regex recurses once per
// character and overflows the stack on long input, and config input is not to be trusted
// with it. A pattern the schema gains needs its matcher here (and a row in the unit test that
// compares it with the regular expression on short strings).
const std::map<std::string, bool (*)(std::string_view), std::less<>>& matchers() {
  static const std::map<std::string, bool (*)(std::string_view), std::less<>> m = {
      {R"(^[^/\s:]{1,15}$)", interface_name},
      {R"(^[a-z0-9_-]{1,32}$)", profile_name},
      {R"(^[a-z_][a-z0-9_.-]{0,31}$)", account_name},
      {R"(^(\.|[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?)$)", domain_name},
      {R"(^[^-\s]\S*$)", ssh_destination},
      {R"(^[0-9]{1,9}(ms|s|m|h)?$)", duration},
  };
  return m;
}

// A key for uniqueItems: scalars that same_scalar() calls equal get the same key.
std::string unique_key(const node& v) {
  switch (v.type) {
    case kind::integer:
    case kind::number: {
      double d = v.number == 0 ? 0 : v.number;  // -0 == 0
      return "n" + std::string(reinterpret_cast<const char*>(&d), sizeof d);
    }
    case kind::boolean:
      return v.boolean ? "t" : "f";
    case kind::string:
      return "s" + v.text;
    case kind::null:
      return "z" + v.text;
    default:
      return "";
  }
}

}  // namespace

bool (*pattern_matcher(std::string_view pattern))(std::string_view) {
  auto it = matchers().find(pattern);
  if (it == matchers().end())
    throw std::logic_error("schema pattern " + std::string(pattern) +
                           " has no hand-written matcher in config/schema.cpp");
  return it->second;
}

schema::schema(node document) : doc_(std::move(document)) { check_keywords(doc_, "#"); }

const schema& schema::builtin() {
  static const schema s(parse(generated::schema_text, "tprosshy.schema.json",
                              parse_options{.expand = false, .env = {}}));
  return s;
}

// Walks every subschema so a keyword this validator does not implement fails loudly.
void schema::check_keywords(const node& s, const std::string& where) const {
  if (s.type == kind::boolean) return;
  if (s.type != kind::map) throw std::logic_error("schema " + where + " is not an object");
  for (auto& e : s.entries) {
    if (!annotations.contains(e.key) && !assertions.contains(e.key))
      throw std::logic_error("schema " + where + " uses unsupported keyword '" + e.key + "'");
    if (e.key == "properties" || e.key == "$defs") {
      for (auto& p : e.value.entries) check_keywords(p.value, where + "/" + e.key + "/" + p.key);
    } else if (e.key == "items" || e.key == "propertyNames" ||
               (e.key == "additionalProperties" && e.value.type == kind::map)) {
      check_keywords(e.value, where + "/" + e.key);
    } else if (e.key == "$ref") {
      at(e.value.text);  // must resolve
    } else if (e.key == "pattern") {
      pattern_matcher(e.value.text);
    }
  }
}

const node& schema::at(const std::string& pointer) const {
  if (!pointer.starts_with("#")) throw std::logic_error("only local $ref is supported: " + pointer);
  const node* cur = &doc_;
  std::size_t pos = 1;
  while (pos < pointer.size()) {
    auto next = pointer.find('/', pos + 1);
    auto part =
        pointer.substr(pos + 1, next == std::string::npos ? std::string::npos : next - pos - 1);
    cur = cur->find(part);
    if (!cur) throw std::logic_error("schema pointer " + pointer + " does not resolve");
    pos = next == std::string::npos ? pointer.size() : next;
  }
  return resolve(*cur);
}

const node& schema::resolve(const node& s) const {
  const node* ref = s.find("$ref");
  // A $ref with only annotations beside it is the referenced schema.
  if (ref && s.entries.size() == 1) return at(ref->text);
  return s;
}

void schema::validate(const node& value, const options& opts) const {
  check(doc_, value, "", nullptr, opts);
}

void schema::validate_at(const std::string& pointer, const node& value, const std::string& path,
                         const options& opts) const {
  check(at(pointer), value, path, nullptr, opts);
}

bool schema::check(const node& s, const node& v, const std::string& path, const location* key_at,
                   const options& opts) const {
  // Rejects `n` (v, or a value inside it) and says why at `where`.
  auto reject = [&](const node& n, const location& where, const std::string& p,
                    const std::string& message) {
    if (opts.rejected) opts.rejected->insert(&n);
    report(opts.sink, where, p, message);
    return false;
  };
  auto bad = [&](const location& where, const std::string& p, const std::string& message) {
    return reject(v, where, p, message);
  };
  if (s.type == kind::boolean) return s.boolean || bad(v.at, path, "not allowed here");
  if (auto* ref = s.find("$ref"); ref && !check(at(ref->text), v, path, key_at, opts)) return false;

  if (auto* t = s.find("type")) {
    std::vector<std::string> types;
    if (t->type == kind::list)
      for (auto& i : t->items) types.push_back(i.text);
    else
      types.push_back(t->text);
    bool ok = false;
    for (auto& name : types) ok = ok || has_type(v, name);
    if (!ok) {
      std::string want;
      for (std::size_t i = 0; i < types.size(); ++i)
        want += (i ? " or " : "") + type_name(types[i]);
      std::string msg = "expected " + want + ", got " + describe(v);
      if (types.size() == 1 && types[0] == "string" && v.is_scalar() && v.type != kind::null)
        msg += " (quote it to make it a string)";
      static const std::set<std::string> yaml11 = {"yes", "no", "on", "off", "y", "n"};
      if (types.size() == 1 && types[0] == "boolean" && v.type == kind::string &&
          yaml11.contains(v.text))
        msg += " (write true or false)";
      return bad(v.at, path, msg);
    }
  }

  if (auto* e = s.find("enum")) {
    bool ok = false;
    std::vector<std::string> names;
    for (auto& option : e->items) {
      ok = ok || same_scalar(option, v);
      names.push_back(option.text);
    }
    if (!ok) {
      std::string list;
      for (std::size_t i = 0; i < names.size(); ++i) list += (i ? ", " : "") + names[i];
      std::string msg = show(v) + " is not one of " + list;
      if (v.type == kind::string)
        if (auto near = closest(v.text, names)) msg += " (did you mean '" + *near + "'?)";
      return bad(v.at, path, msg);
    }
  }

  if (v.type == kind::string) {
    if (auto* min = s.find("minLength"); min && v.text.size() < min->number)
      return bad(v.at, path,
                 min->number == 1 ? "must not be empty"
                                  : "must be at least " + min->text + " characters long");
    if (auto* max = s.find("maxLength"); max && v.text.size() > max->number)
      return bad(v.at, path, show(v) + " is longer than " + max->text + " characters");
    if (auto* p = s.find("pattern"); p && !pattern_matcher(p->text)(v.text)) {
      auto* hint = s.find("x-hint");
      return bad(v.at, path, show(v) + " " + (hint ? hint->text : "does not match " + p->text));
    }
  }

  if (v.type == kind::integer || v.type == kind::number) {
    auto* min = s.find("minimum");
    auto* max = s.find("maximum");
    bool low = min && v.number < min->number;
    bool high = max && v.number > max->number;
    if ((low || high) && min && max)
      return bad(v.at, path, v.text + " is out of range (" + min->text + "-" + max->text + ")");
    if (low) return bad(v.at, path, v.text + " is less than the minimum " + min->text);
    if (high) return bad(v.at, path, v.text + " is greater than the maximum " + max->text);
  }

  if (v.type == kind::list) {
    if (auto* min = s.find("minItems"); min && v.items.size() < min->number)
      return bad(v.at, path,
                 min->number == 1 ? "must list at least one item"
                                  : "must list at least " + min->text + " items");
    if (auto* max = s.find("maxItems"); max && v.items.size() > max->number)
      return bad(v.at, path,
                 "lists " + std::to_string(v.items.size()) + " items; at most " + max->text);
    if (auto* items = s.find("items"))
      for (std::size_t i = 0; i < v.items.size(); ++i)
        check(*items, v.items[i], join(path, i), nullptr, opts);
    if (auto* u = s.find("uniqueItems"); u && u->boolean) {
      std::unordered_map<std::string, std::size_t> first;  // linear, for long lists
      for (std::size_t i = 0; i < v.items.size(); ++i) {
        if (!v.items[i].is_scalar()) continue;
        auto [pos, fresh] = first.try_emplace(unique_key(v.items[i]), i);
        if (!fresh)
          reject(v.items[i], v.items[i].at, join(path, i),
                 show(v.items[i]) + " is listed twice (first at " +
                     v.items[pos->second].at.to_string() + ")");
      }
    }
  }

  if (v.type == kind::map) {
    const node* props = s.find("properties");
    const node* extra = s.find("additionalProperties");
    const node* names = s.find("propertyNames");
    std::set<std::string> meant;  // keys an unknown key was taken for: not missing as well
    for (auto& e : v.entries) {
      std::string p = join(path, e.key);
      if (names) {
        node key;
        key.type = kind::string;
        key.text = e.key;
        key.at = e.key_at;
        // The error is about the key; what is rejected is the value it names.
        options key_opts = opts;
        key_opts.rejected = nullptr;
        if (!check(*names, key, p, nullptr, key_opts)) {
          if (opts.rejected) opts.rejected->insert(&e.value);
          continue;
        }
      }
      if (const node* sub = props ? props->find(e.key) : nullptr) {
        check(*sub, e.value, p, &e.key_at, opts);
      } else if (extra && extra->type == kind::boolean && !extra->boolean) {
        std::vector<std::string> known;
        if (props)
          for (auto& k : props->entries) known.push_back(k.key);
        std::string msg = "unknown key '" + e.key + "'";
        if (auto near = closest(e.key, known)) {
          msg += " (did you mean '" + *near + "'?)";
          meant.insert(*near);
        } else if (props) {
          // A key one level too high, such as a profile's learn_routes outside dns.
          for (auto& k : props->entries)
            if (auto* inner = resolve(k.value).find("properties"); inner && inner->find(e.key)) {
              msg += " (did you mean '" + k.key + "." + e.key + "'?)";
              break;
            }
        }
        reject(e.value, e.key_at, p, msg);
      } else if (extra) {
        check(*extra, e.value, p, &e.key_at, opts);
      }
    }
    bool whole = true;
    if (auto* req = s.find("required"); req && opts.check_required) {
      for (auto& r : req->items) {
        if (v.find(r.text)) {
          continue;
        } else if (meant.contains(r.text)) {  // "did you mean" has said it
          if (opts.rejected) opts.rejected->insert(&v);
          whole = false;
        } else {
          whole = bad(key_at ? *key_at : v.at, join(path, r.text), "required key is missing");
        }
      }
    }
    if (auto* min = s.find("minProperties"); min && v.entries.size() < min->number)
      whole =
          bad(key_at ? *key_at : v.at, path,
              min->number == 1 ? "must not be empty" : "must have at least " + min->text + " keys");
    return whole;
  }
  return true;
}

}  // namespace tprosshy::config::detail
