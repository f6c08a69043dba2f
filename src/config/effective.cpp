// The effective configuration: what load() reads, written back as YAML with the origin of
// every value.
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "config/config.hpp"
#include "config/schema.hpp"
#include "config/tree.hpp"

namespace tprosshy::config {

namespace {

using detail::kind;
using detail::node;

// A value that no file set: the schema's default.
bool is_builtin(const location& at) { return at.file.empty(); }

void mark_builtin(node& n) {
  n.at = {};
  for (auto& i : n.items) mark_builtin(i);
  for (auto& e : n.entries) {
    e.key_at = {};
    mark_builtin(e.value);
  }
}

// ---- defaults: applied to each profile as the loader applies them ----

const node* find(const node* map, std::string_view key) { return map ? map->find(key) : nullptr; }

// `into[key]` becomes `first`'s items, then `second`'s; absent when both are.
void concat(node& into, std::string_view key, const node* first, const node* second) {
  if (!first && !second) return;
  node list = first ? *first : *second;
  list.items.clear();
  for (const node* part : {first, second})
    if (part) list.items.insert(list.items.end(), part->items.begin(), part->items.end());
  if (node* mine = into.find(key))
    *mine = std::move(list);
  else
    into.entries.push_back({std::string(key), {}, std::move(list)});
}

// The profile's own value, else that of defaults.
void inherit(node& into, std::string_view key, const node* fallback_map) {
  if (into.find(key)) return;
  if (const node* v = find(fallback_map, key)) into.entries.push_back({std::string(key), {}, *v});
}

node apply_defaults(const node& profile, const node* defaults) {
  node p = profile;
  if (!defaults) return p;
  // ssh reads the profile's own arguments first; prefixes and domains list defaults' first.
  concat(p, "ssh_args", find(&profile, "ssh_args"), find(defaults, "ssh_args"));
  concat(p, "subnets", find(defaults, "subnets"), find(&profile, "subnets"));
  concat(p, "exclude", find(defaults, "exclude"), find(&profile, "exclude"));
  const node* d_dns = find(defaults, "dns");
  if (d_dns && !p.find("dns")) {
    node empty;
    empty.type = kind::map;
    p.entries.push_back({"dns", {}, empty});
  }
  if (node* dns = p.find("dns")) {
    concat(*dns, "domains", find(d_dns, "domains"), find(find(&profile, "dns"), "domains"));
    inherit(*dns, "nameserver", d_dns);
    inherit(*dns, "learn_routes", d_dns);
    inherit(*dns, "learn_limit", d_dns);
    inherit(*dns, "learn_ttl_max", d_dns);
  }
  inherit(p, "other_protocols", defaults);
  inherit(p, "enabled", defaults);
  return p;
}

// ---- the schema's order and defaults ----

struct shaper {
  const detail::schema& schema;

  // `s` itself, or what its $ref names (a $ref may sit beside a description).
  const node& target(const node& s) const {
    const node* ref = s.find("$ref");
    return ref ? target(schema.at(ref->text)) : s;
  }
  const node* default_of(const node& s) const {
    if (const node* d = s.find("default")) return d;
    const node* ref = s.find("$ref");
    return ref ? default_of(schema.at(ref->text)) : nullptr;
  }

  // `v` (or nothing) reordered as the schema lists its keys, with the defaults it lacks.
  // Empty when there is nothing to show.
  std::optional<node> shape(const node& s_in, const node* v,
                            const std::set<std::string>& skip = {}) const {
    const node& s = target(s_in);
    const node* props = s.find("properties");
    const node* extra = s.find("additionalProperties");
    if (v && v->type != kind::map) return *v;
    if (!props && !(extra && extra->type == kind::map)) {
      if (v) return *v;
      if (const node* d = default_of(s_in)) {
        node n = *d;
        mark_builtin(n);
        return n;
      }
      return std::nullopt;
    }
    node out;
    out.type = kind::map;
    out.at = v ? v->at : location{};
    if (props) {
      for (auto& p : props->entries) {
        if (skip.contains(p.key)) continue;
        const node* have = v ? v->find(p.key) : nullptr;
        std::optional<node> shown;
        if (have) {
          shown = shape(p.value, have);
        } else if (const node* d = default_of(p.value)) {
          shown = *d;
          mark_builtin(*shown);
        } else if (target(p.value).find("properties")) {
          shown = shape(p.value, nullptr);  // a map that only defaults fill
        }
        if (!shown) continue;
        location key_at{};
        if (v)
          for (auto& e : v->entries)
            if (e.key == p.key) key_at = e.key_at;
        out.entries.push_back({p.key, key_at, std::move(*shown)});
      }
    } else if (v) {
      for (auto& e : v->entries)
        if (auto shown = shape(*extra, &e.value)) out.entries.push_back({e.key, e.key_at, *shown});
    }
    if (out.entries.empty() && !v) return std::nullopt;
    return out;
  }
};

// ---- YAML text ----

bool plain_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         std::string_view("-_./@%+=,:~").find(c) != std::string_view::npos;
}

// Text that reads back as this very string without quotes.
bool plain_ok(const std::string& s) {
  static const std::set<std::string> words = {
      "true", "True", "TRUE", "false", "False", "FALSE", "null", "Null", "NULL",
      "~",    "yes",  "Yes",  "YES",   "no",    "No",    "NO",   "on",   "On",
      "ON",   "off",  "Off",  "OFF",   "y",     "Y",     "n",    "N",    "-"};
  if (s.empty() || words.contains(s) || detail::is_yaml_number(s)) return false;
  char first = s[0];
  if (!plain_char(first) || first == '@' || first == '%' || first == ',' || first == ':')
    return false;
  if (s.back() == ':') return false;
  for (char c : s)
    if (!plain_char(c)) return false;
  return true;
}

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string scalar(const node& n) {
  switch (n.type) {
    case kind::boolean:
      return n.boolean ? "true" : "false";
    case kind::integer:
    case kind::number:
      return n.text;
    case kind::null:
      return "null";
    default:
      return plain_ok(n.text) ? n.text : quoted(n.text);
  }
}

std::string origin(const location& at) {
  return "  # " +
         (is_builtin(at) ? std::string("default") : at.file + ":" + std::to_string(at.line));
}

void render(std::string& out, const node& n, int indent);

// What follows "key:" or "-": the value on the same line, or nested below.
void render_value(std::string& out, const node& v, int indent) {
  if (v.is_scalar()) {
    out += " " + scalar(v) + origin(v.at) + "\n";
  } else if (v.type == kind::list && v.items.empty()) {
    out += " []" + origin(v.at) + "\n";
  } else if (v.type == kind::map && v.entries.empty()) {
    out += " {}" + origin(v.at) + "\n";
  } else {
    out += "\n";
    render(out, v, indent + 2);
  }
}

void render(std::string& out, const node& n, int indent) {
  std::string pad(static_cast<std::size_t>(indent), ' ');
  if (n.type == kind::map) {
    for (auto& e : n.entries) {
      out += pad + (plain_ok(e.key) ? e.key : quoted(e.key)) + ":";
      render_value(out, e.value, indent);
    }
  } else if (n.type == kind::list) {
    for (auto& i : n.items) {
      out += pad + "-";
      render_value(out, i, indent);
    }
  }
}

}  // namespace

std::string effective_yaml(const std::filesystem::path& file) {
  node root;
  detail::load_tree(file, root);

  // Apply defaults to every profile, then drop what has been applied.
  const node* defaults = root.find("defaults");
  node merged = root;
  if (node* profiles = merged.find("profiles"))
    for (auto& e : profiles->entries) e.value = apply_defaults(e.value, defaults);

  shaper s{detail::schema::builtin()};
  auto shaped = s.shape(s.schema.document(), &merged, {"include", "defaults"});
  // The schema has root's control socket; another user's default is of their own.
  if (node* sock = shaped ? shaped->find("control") : nullptr;
      sock && (sock = sock->find("socket")))
    if (is_builtin(sock->at)) sock->text = default_control_socket();

  std::string out = "# The configuration " + file.string() +
                    " makes: includes merged, defaults applied to every\n"
                    "# profile, ${VAR} and ~ expanded, built-in defaults filled in. After each "
                    "value, where it\n# comes from: file:line, or default.\n";
  if (shaped) render(out, *shaped, 0);
  return out;
}

}  // namespace tprosshy::config
