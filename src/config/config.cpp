#include "config/config.hpp"

#include <fcntl.h>
#include <glob.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <map>
#include <system_error>
#include <unordered_map>
#include <unordered_set>

#include "config/schema.hpp"
#include "config/ssh_args.hpp"
#include "config/tree.hpp"

namespace tprosshy::config {

std::string location::to_string() const {
  return file + ":" + std::to_string(line) + ":" + std::to_string(column);
}

error::error(location where, const std::string& message)
    : std::runtime_error(where.to_string() + ": " + message),
      where_(std::move(where)),
      message_(message) {}

error::error(location where, const std::string& message, const std::string& what)
    : std::runtime_error(what), where_(std::move(where)), message_(message) {}

namespace {

// "300", "300s", "500ms", "5m", "1h" (the schema's duration pattern has been checked).
std::chrono::milliseconds to_duration(const std::string& text) {
  std::size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  const long long n = std::stoll(text.substr(0, digits));
  const auto unit = text.substr(digits);
  if (unit == "ms") return std::chrono::milliseconds(n);
  if (unit == "m") return std::chrono::minutes(n);
  if (unit == "h") return std::chrono::hours(n);
  return std::chrono::seconds(n);
}

std::string all_lines(const std::vector<error>& all, const std::optional<location>& more) {
  std::string out;
  for (auto& e : all) out += (out.empty() ? "" : "\n") + std::string(e.what());
  if (more)
    out += "\n" + more->to_string() + ": more errors from here on (at most " +
           std::to_string(limits::errors) + " are reported at once)";
  return out;
}

}  // namespace

errors::errors(std::vector<error> all, std::optional<location> more)
    : error(all.at(0).where(), all.at(0).message(), all_lines(all, more)),
      all_(std::move(all)),
      more_(std::move(more)) {}

std::string endpoint::to_string() const {
  if (!port) return address.to_string();
  auto a = address.to_string();
  return (address.is_v6() ? "[" + a + "]" : a) + ":" + std::to_string(*port);
}

std::optional<endpoint> parse_endpoint(std::string_view text) {
  auto parse_port = [](std::string_view t) -> std::optional<uint16_t> {
    uint16_t port = 0;
    auto [end, rc] = std::from_chars(t.data(), t.data() + t.size(), port);
    if (t.empty() || rc != std::errc{} || end != t.data() + t.size() || port == 0)
      return std::nullopt;
    return port;
  };
  boost::system::error_code ec;
  if (text.starts_with('[')) {
    auto close = text.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    auto a = boost::asio::ip::make_address_v6(std::string(text.substr(1, close - 1)), ec);
    if (ec) return std::nullopt;
    auto rest = text.substr(close + 1);
    if (rest.empty()) return endpoint{a, std::nullopt};
    if (!rest.starts_with(':')) return std::nullopt;
    auto port = parse_port(rest.substr(1));
    if (!port) return std::nullopt;
    return endpoint{a, port};
  }
  auto a = boost::asio::ip::make_address(std::string(text), ec);
  if (!ec) return endpoint{a, std::nullopt};
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  auto v4 = boost::asio::ip::make_address_v4(std::string(text.substr(0, colon)), ec);
  if (ec) return std::nullopt;
  auto port = parse_port(text.substr(colon + 1));
  if (!port) return std::nullopt;
  return endpoint{v4, port};
}

namespace {

bool account_exists(const std::string& name) {
  std::vector<char> buf(16384);
  passwd pw{}, *found = nullptr;
  return ::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found) == 0 && found;
}

namespace fs = std::filesystem;
using detail::fail;
using detail::join;
using detail::kind;
using detail::node;

std::string file_kind(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "an unknown kind of file";
}

// A config file's text, or why there is none: `err` when there is no file to read (missing,
// unreadable, a directory); not_regular or too_large when there is one but it cannot be a
// config.
struct file_text {
  std::string text;
  int err = 0;
  std::string not_regular;  // "a FIFO", "a character device", ...
  std::string too_large;    // "2000000 bytes", "more than 1048576 bytes"
};

// Regular files only, at most limits::file_bytes: stat first, so a device or FIFO is never
// even opened; open without blocking, so a FIFO swapped in after the stat cannot hang the
// load; and check again on the descriptor.
file_text read_file(const fs::path& path) {
  file_text out;
  auto acceptable = [&](const struct stat& st) {
    if (S_ISDIR(st.st_mode)) {
      out.err = EISDIR;
    } else if (!S_ISREG(st.st_mode)) {
      out.not_regular = file_kind(st.st_mode);
    } else if (static_cast<std::uintmax_t>(st.st_size) > limits::file_bytes) {
      out.too_large = std::to_string(st.st_size) + " bytes";
    }
    return out.err == 0 && out.not_regular.empty() && out.too_large.empty();
  };
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    out.err = errno;
    return out;
  }
  if (!acceptable(st)) return out;
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) {
    out.err = errno;
    return out;
  }
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } close_fd{fd};
  if (::fstat(fd, &st) != 0) {
    out.err = errno;
    return out;
  }
  if (!acceptable(st)) return out;
  std::string text;
  text.reserve(static_cast<std::size_t>(st.st_size));
  char buf[65536];
  while (true) {
    auto n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      out.err = errno;
      return out;
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > limits::file_bytes) {  // it grew while we read
      out.too_large = "more than " + std::to_string(limits::file_bytes) + " bytes";
      return out;
    }
  }
  out.text = std::move(text);
  return out;
}

std::string file_limit() {
  return "the limit is " + std::to_string(limits::file_bytes) + " bytes (1 MiB) per file";
}

// Maps merge key by key; lists and scalars are replaced, except the top-level exclude.
void merge(node& base, node over, bool top) {
  std::unordered_map<std::string, std::size_t> index;  // key -> base.entries[i]; linear
  for (std::size_t i = 0; i < base.entries.size(); ++i) index.emplace(base.entries[i].key, i);
  for (auto& e : over.entries) {
    auto it = index.find(e.key);
    if (it == index.end()) {
      index.emplace(e.key, base.entries.size());
      base.entries.push_back(std::move(e));
      continue;
    }
    node& mine = base.entries[it->second].value;
    if (mine.type == kind::map && e.value.type == kind::map) {
      merge(mine, std::move(e.value), false);
    } else if (top && e.key == "exclude" && mine.type == kind::list && e.value.type == kind::list) {
      for (auto& i : e.value.items) mine.items.push_back(std::move(i));
    } else {
      base.entries[it->second] = std::move(e);
    }
  }
}

struct frame {
  fs::path canonical;
  std::string display;
};

bool is_glob(std::string_view s) { return s.find_first_of("*?[") != std::string_view::npos; }

// `s` matched literally by glob(3).
std::string glob_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

// The paths `pattern` matches, in byte order; none is not a mistake.
std::vector<std::string> glob_files(const std::string& pattern, const location& at,
                                    const std::string& path) {
  glob_t g{};
  int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
  struct freer {
    glob_t* g;
    ~freer() { ::globfree(g); }
  } free_g{&g};
  if (rc == GLOB_NOMATCH) return {};
  if (rc != 0)
    fail(at, path,
         "cannot expand '" + pattern +
             "': " + (rc == GLOB_NOSPACE ? "out of memory" : "read error"));
  std::vector<std::string> out(g.gl_pathv, g.gl_pathv + g.gl_pathc);
  std::sort(out.begin(), out.end());
  return out;
}

struct loader {
  explicit loader(detail::collector& s) : sink(s) {}

  detail::collector& sink;
  const detail::schema& schema = detail::schema::builtin();
  std::vector<frame> stack;
  detail::budget spend;
  std::size_t includes = 0;
  std::vector<fs::path> read;  // every file, as opened

  node load(const fs::path& real, const std::string& display) {
    auto f = read_file(real);
    if (f.err)
      throw unreadable(f.err, std::generic_category(), "cannot read config file " + display);
    location top{display, 1, 1};
    if (!f.not_regular.empty())
      throw error(top, "this is " + f.not_regular +
                           ", not a regular file; tprosshy reads its configuration from "
                           "regular files only");
    if (!f.too_large.empty()) throw error(top, "this file is " + f.too_large + "; " + file_limit());
    return load_text(f.text, real, display);
  }

  node load_text(const std::string& text, const fs::path& real, const std::string& display) {
    sink.file(display);
    read.push_back(fs::absolute(real));
    node doc = detail::parse(text, display, {.expand = true, .env = {}, .spend = &spend});
    std::unordered_set<const node*> rejected;
    schema.validate(doc, {.check_required = false, .sink = &sink, .rejected = &rejected});
    std::error_code ec;
    stack.push_back({fs::weakly_canonical(fs::absolute(real), ec), display});

    node merged;
    merged.type = kind::map;
    if (const node* inc = doc.find("include"); inc && !rejected.contains(inc)) {
      for (std::size_t i = 0; i < inc->items.size(); ++i) {
        const node& item = inc->items[i];
        if (rejected.contains(&item)) continue;
        std::string path = join("include", i);
        fs::path rel(item.text);
        fs::path base = rel.is_absolute() ? fs::path() : real.parent_path();
        fs::path display_base = rel.is_absolute() ? fs::path() : fs::path(display).parent_path();
        if (!is_glob(item.text)) {
          include(merged, item, path, base / rel,
                  rel.is_absolute() ? rel : (display_base / rel).lexically_normal());
          continue;
        }
        // A pattern: every file it matches, in byte order, named as if listed one by one.
        std::string prefix = base.empty() ? "" : glob_escape(base.string()) + "/";
        std::size_t cut = base.empty() ? 0 : base.string().size() + 1;
        for (auto& match : glob_files(prefix + item.text, item.at, path))
          include(merged, item, path, match,
                  rel.is_absolute() ? fs::path(match)
                                    : (display_base / match.substr(cut)).lexically_normal());
      }
    }
    std::erase_if(doc.entries, [](auto& e) { return e.key == "include"; });
    location at = doc.at;
    merge(merged, std::move(doc), true);
    merged.at = at;
    stack.pop_back();
    return merged;
  }

  // Reads one included file into `merged`; `item` is the include entry that names it.
  void include(node& merged, const node& item, const std::string& path, const fs::path& sub_real,
               const fs::path& sub_display_path) {
    std::string sub_display = sub_display_path.string();
    std::error_code ec;
    auto canon = fs::weakly_canonical(fs::absolute(sub_real), ec);
    for (auto& f : stack) {
      if (f.canonical != canon) continue;
      std::string chain;
      for (auto& g : stack) chain += g.display + " -> ";
      fail(item.at, path, "include cycle: " + chain + sub_display);
    }
    if (stack.size() > limits::include_depth)
      fail(item.at, path,
           "'" + sub_display + "' would be included " + std::to_string(stack.size()) +
               " levels deep; the limit is " + std::to_string(limits::include_depth));
    if (++includes > limits::includes)
      fail(item.at, path,
           "'" + sub_display + "' would be file number " + std::to_string(includes) +
               " read through include (a file included twice counts twice); the limit is " +
               std::to_string(limits::includes));
    auto f = read_file(sub_real);
    if (f.err) fail(item.at, path, "cannot read '" + sub_display + "': " + std::strerror(f.err));
    if (!f.not_regular.empty())
      fail(item.at, path,
           "'" + sub_display + "' is " + f.not_regular +
               ", not a regular file; only regular files can be included");
    if (!f.too_large.empty())
      fail(item.at, path, "'" + sub_display + "' is " + f.too_large + "; " + file_limit());
    merge(merged, load_text(f.text, sub_real, sub_display), true);
  }
};

// An item of a profile list, with the path that names it in errors.
struct item {
  const node* value;
  std::string path;
};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

struct claim {
  std::string profile;
  const node* value;
};

// Turns the merged tree into the model. Every check reports to the collector and goes on
// without the value it rejects; nodes the schema rejected are left out as if absent, so
// one mistake is reported once.
struct builder {
  detail::collector& sink;
  const std::unordered_set<const node*>& rejected;

  bool usable(const node* n) const { return n && !rejected.contains(n); }
  const node* child(const node* map, std::string_view key) const {
    if (!usable(map)) return nullptr;
    const node* n = map->find(key);
    return usable(n) ? n : nullptr;
  }
  std::string text_or(const node* map, std::string_view key, std::string fallback) const {
    const node* v = child(map, key);
    return v ? v->text : fallback;
  }
  std::vector<item> items_of(const node* map, const std::string& map_path,
                             std::string_view key) const {
    std::vector<item> out;
    if (const node* list = child(map, key))
      for (std::size_t i = 0; i < list->items.size(); ++i)
        if (usable(&list->items[i])) out.push_back({&list->items[i], join(join(map_path, key), i)});
    return out;
  }
  void report(const location& at, const std::string& path, const std::string& message) {
    sink.add(at, path, message);
  }
  std::optional<net::prefix> to_prefix(const item& it) {
    std::string why;
    auto p = net::parse_prefix(it.value->text, &why);
    if (!p) report(it.value->at, it.path, why);
    return p;
  }

  config build(const node& root, const fs::path& file) {
    config c;
    c.file = fs::absolute(file).lexically_normal();

    const node* mode = child(&root, "mode");
    if (mode) c.mode = mode->text == "gateway" ? run_mode::gateway : run_mode::local;
    for (auto& it : items_of(child(&root, "gateway"), "gateway", "interfaces"))
      c.gateway_interfaces.push_back(it.value->text);
    const node* gateway = root.find("gateway");
    if (c.mode == run_mode::gateway && !(gateway && gateway->find("interfaces")))
      report(mode->at, "mode",
             "gateway mode needs gateway.interfaces, the LAN-side interfaces whose traffic is "
             "redirected");

    const node* listen = child(&root, "listen");
    if (const node* a = child(listen, "address")) {
      boost::system::error_code ec;
      auto addr = boost::asio::ip::make_address(a->text, ec);
      if (ec) {
        report(a->at, "listen.address", "'" + a->text + "' is not an IP address");
      } else if (c.mode == run_mode::local && !addr.is_loopback()) {
        report(a->at, "listen.address",
               a->text +
                   " is not a loopback address; in local mode tprosshy never listens beyond "
                   "loopback (set mode: gateway to serve other machines)");
      } else {
        c.listen_address = addr;
      }
    }
    const node* tcp_port = child(listen, "tcp_port");
    const node* dns_port = child(listen, "dns_port");
    if (tcp_port) c.tcp_port = static_cast<uint16_t>(tcp_port->number);
    if (dns_port) c.dns_port = static_cast<uint16_t>(dns_port->number);
    if (c.tcp_port != 0 && c.tcp_port == c.dns_port)
      report(dns_port->at, "listen.dns_port",
             std::to_string(c.dns_port) + " is also listen.tcp_port (" + tcp_port->at.to_string() +
                 "); the TCP and DNS listeners need different ports (0 picks a free one)");

    const node* dns = child(&root, "dns");
    if (child(dns, "upstream")) {
      c.dns_upstream.clear();
      for (auto& it : items_of(dns, "dns", "upstream")) {
        const auto& t = it.value->text;
        if (t == "system") {
          c.dns_upstream.push_back(t);
        } else if (auto e = parse_endpoint(t)) {
          c.dns_upstream.push_back(e->to_string());
        } else {
          report(it.value->at, it.path,
                 "'" + t +
                     "' is not \"system\" or an IP address with an optional port (9.9.9.9, "
                     "9.9.9.9:53, [2620:fe::fe]:53)");
        }
      }
    }
    if (text_or(dns, "capture", "resolvers") == "all") c.capture = dns_capture::all;
    if (const node* n = child(dns, "cache_size"))
      c.cache_size = static_cast<std::size_t>(n->number);
    if (text_or(&root, "on_start_failure", "exit") == "retry")
      c.on_start_failure = start_failure::retry;
    if (const node* n = child(&root, "drain_timeout")) c.drain_timeout = to_duration(n->text);
    c.control_socket = text_or(child(&root, "control"), "socket", default_control_socket());
    if (const node* n = child(&root, "helper")) {
      if (n->text.starts_with("/"))
        c.helper_socket = n->text;
      else
        report(n->at, "helper", "'" + n->text + "' is not an absolute path");
    }
    if (const node* n = child(&root, "ssh_user")) {
      if (!account_exists(n->text))
        report(n->at, "ssh_user", "no account '" + n->text + "' in the password database");
      c.ssh_user = n->text;
      c.ssh_user_at = n->at;
    }
    if (const node* n = child(&root, "lockdown")) {
      c.lockdown = n->boolean;
      c.lockdown_at = n->at;
    }
    if (const node* n = child(child(&root, "metrics"), "listen")) {
      auto e = n->type == kind::integer ? parse_endpoint("127.0.0.1:" + n->text)
                                        : parse_endpoint(n->text);
      if (!e && n->type == kind::string && !n->text.empty() &&
          n->text.find_first_not_of("0123456789") == std::string::npos)
        e = parse_endpoint("127.0.0.1:" + n->text);
      if (!e || !e->port || *e->port == 0)
        report(n->at, "metrics.listen",
               "'" + n->text + "' is not PORT, IP:PORT or [IPv6]:PORT (e.g. 9100, 127.0.0.1:9100)");
      else
        c.metrics_listen = e;
    }
    for (auto& it : items_of(&root, "", "exclude"))
      if (auto p = to_prefix(it)) c.exclude.push_back(*p);
    c.log_level = text_or(child(&root, "log"), "level", "info");

    const node* defaults = child(&root, "defaults");
    const node* d_dns = child(defaults, "dns");
    std::map<std::string, claim> prefixes;  // enabled profiles' subnets
    auto check_claim = [&](const std::string& key, const item& it, const std::string& profile) {
      auto [pos, fresh] = prefixes.try_emplace(key, claim{profile, it.value});
      if (fresh) return;
      if (pos->second.value == it.value)
        report(it.value->at, it.path,
               key + " would be routed by every profile ('" + pos->second.profile + "' and '" +
                   profile + "'); move it into one profile");
      else
        report(it.value->at, it.path,
               key + " is already routed by profile '" + pos->second.profile + "' (" +
                   pos->second.value->at.to_string() +
                   "); two profiles cannot claim the same prefix");
    };

    const node* profiles = child(&root, "profiles");
    static const std::vector<detail::entry> none;
    for (auto& e : profiles ? profiles->entries : none) {
      const node& pn = e.value;
      if (!usable(&pn) || !child(&pn, "host")) continue;  // the schema said why
      std::string path = join("profiles", e.key);
      profile p;
      p.name = e.key;
      p.where = e.key_at;
      if (const node* h = child(&pn, "host"); h->type == kind::list) {
        for (auto& it : items_of(&pn, path, "host")) p.hosts.push_back(it.value->text);
      } else {
        p.hosts.push_back(h->text);
      }
      if (p.hosts.empty()) continue;  // the schema said why
      p.host = p.hosts.front();
      for (auto& it : items_of(&pn, path, "host_keys")) {
        std::string why;
        if (auto k = parse_host_key(it.value->text, &why))
          p.host_keys.push_back(*k);
        else
          report(it.value->at, it.path, why);
      }
      const node* timeout_at = nullptr;
      for (const node* map : {&pn}) {
        if (const node* n = child(map, "pool")) p.pool = static_cast<unsigned>(n->number);
        const node* h = child(map, "health");
        if (const node* n = child(h, "interval")) p.health.interval = to_duration(n->text);
        if (const node* n = child(h, "timeout")) {
          p.health.timeout = to_duration(n->text);
          timeout_at = n;
        }
        if (const node* n = child(h, "probe"); n && n->text != "auto") {
          auto e = parse_endpoint(n->text);
          if (!e || !e->port || *e->port == 0)
            report(n->at, join(join(path, "health"), "probe"),
                   "'" + n->text + "' is not auto or HOST:PORT (10.20.0.1:443, [fd00::1]:443)");
          else
            p.health.probe = e;
        }
      }
      if (p.health.timeout >= p.health.interval)
        report(timeout_at ? timeout_at->at : e.key_at, join(join(path, "health"), "timeout"),
               std::to_string(p.health.timeout.count()) +
                   " ms must be shorter than the interval (" +
                   std::to_string(p.health.interval.count()) + " ms)");
      // As ssh reads them: the profile's own, then those of defaults. An entry the schema
      // rejected (a number, say) still stands where it is, so the others read as written.
      std::vector<item> args;
      std::vector<std::string> words;
      for (auto [map, map_path] : {std::pair<const node*, std::string>{&pn, path},
                                   std::pair<const node*, std::string>{defaults, "defaults"}}) {
        const node* list = usable(map) ? map->find("ssh_args") : nullptr;
        for (std::size_t i = 0; usable(list) && i < list->items.size(); ++i) {
          args.push_back({&list->items[i], join(join(map_path, "ssh_args"), i)});
          words.push_back(list->items[i].text);
          if (usable(&list->items[i])) p.ssh_args.push_back(list->items[i].text);
        }
      }
      for (auto& refused : refused_ssh_args(words))
        if (auto& it = args[refused.index]; usable(it.value))
          report(it.value->at, it.path, refused.message);

      auto subnet_items = items_of(defaults, "defaults", "subnets");
      for (auto& it : items_of(&pn, path, "subnets")) subnet_items.push_back(it);
      std::vector<item> subnets;  // those that are prefixes, in step with p.subnets
      std::unordered_map<std::string, const node*> listed;  // prefix -> first entry
      for (auto& it : subnet_items) {
        auto prefix = to_prefix(it);
        if (!prefix) continue;
        auto [pos, fresh] = listed.try_emplace(prefix->to_string(), it.value);
        if (!fresh) {
          report(it.value->at, it.path,
                 prefix->to_string() + " is listed twice (first at " + pos->second->at.to_string() +
                     ")");
          continue;
        }
        p.subnets.push_back(*prefix);
        subnets.push_back(it);
      }
      for (auto& it : items_of(defaults, "defaults", "exclude"))
        if (auto x = to_prefix(it)) p.exclude.push_back(*x);
      for (auto& it : items_of(&pn, path, "exclude"))
        if (auto x = to_prefix(it)) p.exclude.push_back(*x);

      const node* p_dns = child(&pn, "dns");
      auto dom_items = items_of(d_dns, "defaults.dns", "domains");
      for (auto& it : items_of(p_dns, join(path, "dns"), "domains")) dom_items.push_back(it);
      std::unordered_set<std::string> seen;
      for (auto& it : dom_items) {
        std::string name = lower(it.value->text);
        if (name.size() > 1 && name.ends_with('.')) name.pop_back();
        if (seen.insert(name).second) p.dns.domains.push_back(name);
      }
      const node* ns = child(p_dns, "nameserver");
      std::string ns_path = join(path, "dns.nameserver");
      if (!ns && (ns = child(d_dns, "nameserver"))) ns_path = "defaults.dns.nameserver";
      if (ns && ns->text != "auto") {
        if (auto ep = parse_endpoint(ns->text))
          p.dns.nameserver = ep->to_string();
        else
          report(ns->at, ns_path,
                 "'" + ns->text +
                     "' is not \"auto\" or an IP address with an optional port "
                     "(10.0.0.53, 10.0.0.53:5353, [fd00::53]:53)");
      }
      const node* learn = child(p_dns, "learn_routes");
      if (!learn) learn = child(d_dns, "learn_routes");
      if (learn) p.dns.learn_routes = learn->boolean;
      const node* limit = child(p_dns, "learn_limit");
      if (!limit) limit = child(d_dns, "learn_limit");
      if (limit) p.dns.learn_limit = static_cast<std::size_t>(limit->number);
      const node* ttl_max = child(p_dns, "learn_ttl_max");
      if (!ttl_max) ttl_max = child(d_dns, "learn_ttl_max");
      if (ttl_max) {
        const auto d = std::chrono::duration_cast<std::chrono::seconds>(to_duration(ttl_max->text));
        if (d < std::chrono::seconds(1) || d > std::chrono::hours(24))
          report(ttl_max->at, join(path, "dns.learn_ttl_max"),
                 ttl_max->text + " is not between 1s and 24h");
        else
          p.dns.learn_ttl_max = d;
      }
      const node* other = child(&pn, "other_protocols");
      if (!other) other = child(defaults, "other_protocols");
      if (other) p.refuse_other = other->text != "pass";
      const node* enabled = child(&pn, "enabled");
      if (!enabled) enabled = child(defaults, "enabled");
      if (enabled) p.enabled = enabled->boolean;

      if (p.enabled)
        for (std::size_t i = 0; i < subnets.size(); ++i)
          check_claim(p.subnets[i].to_string(), subnets[i], p.name);
      c.profiles.push_back(std::move(p));
    }
    if (!c.profiles.empty() &&
        std::none_of(c.profiles.begin(), c.profiles.end(), [](auto& p) { return p.enabled; })) {
      for (auto& e : root.entries)
        if (e.key == "profiles")
          report(e.key_at, "profiles", "no profile is enabled; set enabled: true on at least one");
    }
    return c;
  }
};

}  // namespace

namespace detail {

config load_tree(const fs::path& file, node& root) {
  collector sink;
  loader l(sink);
  try {
    root = l.load(file, file.string());
    std::unordered_set<const node*> rejected;
    l.schema.validate(root, {.check_required = true, .sink = &sink, .rejected = &rejected});
    config c = builder{sink, rejected}.build(root, file);
    if (!sink.empty()) sink.raise();
    c.files = std::move(l.read);
    return c;
  } catch (const errors&) {
    throw;
  } catch (const error& fatal) {
    // A mistake the load cannot go on after: with those found before it, if any.
    if (!sink.empty()) sink.raise(&fatal);
    throw;
  }
}

}  // namespace detail

config load(const fs::path& file) {
  node root;
  return detail::load_tree(file, root);
}

std::optional<std::string> parse_host_key(std::string_view line, std::string* why) {
  static const std::vector<std::string_view> types = {"ssh-ed25519",
                                                      "ssh-rsa",
                                                      "ecdsa-sha2-nistp256",
                                                      "ecdsa-sha2-nistp384",
                                                      "ecdsa-sha2-nistp521",
                                                      "sk-ssh-ed25519@openssh.com",
                                                      "sk-ecdsa-sha2-nistp256@openssh.com"};
  std::vector<std::string_view> words;
  for (std::size_t i = 0; i < line.size();) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    const auto start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) words.push_back(line.substr(start, i - start));
  }
  auto fail = [&](std::string text) -> std::optional<std::string> {
    if (why) *why = std::move(text);
    return std::nullopt;
  };
  // The key type comes first in a public key, second in a known_hosts line.
  for (std::size_t at = 0; at < std::min<std::size_t>(2, words.size()); ++at) {
    if (std::find(types.begin(), types.end(), words[at]) == types.end()) continue;
    if (at + 1 >= words.size()) return fail("'" + std::string(words[at]) + "' has no key after it");
    const auto key = words[at + 1];
    const bool base64 =
        key.size() >= 16 && key.size() % 4 == 0 && std::all_of(key.begin(), key.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/' || c == '=';
        });
    if (!base64) return fail("the key after " + std::string(words[at]) + " is not base64");
    return std::string(words[at]) + " " + std::string(key);
  }
  return fail("is not a public key or a known_hosts line (such as \"ssh-ed25519 AAAA...\")");
}

fs::path control_socket_of(const fs::path& file) {
  node root;
  try {
    return detail::load_tree(file, root).control_socket;
  } catch (const std::exception&) {
    // What was read before the mistake still says where the running process listens.
  }
  if (const node* c = root.find("control"); c && c->type == kind::map)
    if (const node* s = c->find("socket"); s && s->type == kind::string && !s->text.empty())
      return s->text;
  return default_control_socket();
}

namespace {

std::string mode_text(mode_t m) {
  char b[8];
  std::snprintf(b, sizeof b, "%04o", static_cast<unsigned>(m & 07777));
  return b;
}

std::optional<std::string> unsafe_path(const fs::path& file) {
  const auto me = ::geteuid();
  std::error_code ec;
  const auto path = fs::absolute(file, ec);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    return path.string() + ": " + std::generic_category().message(errno);
  auto owner = [](uid_t u) {
    const passwd* pw = ::getpwuid(u);
    return pw ? std::string(pw->pw_name) : "uid " + std::to_string(u);
  };
  if (st.st_uid != 0 && st.st_uid != me)
    return path.string() + " is owned by " + owner(st.st_uid) + " (mode " + mode_text(st.st_mode) +
           "); a root tprosshy reads only files of root's";
  if (st.st_mode & (S_IWGRP | S_IWOTH))
    return path.string() + " is writable by " + (st.st_mode & S_IWOTH ? "others" : "its group") +
           " (owner " + owner(st.st_uid) + ", mode " + mode_text(st.st_mode) +
           "); a root tprosshy reads only files nobody else may change (chmod go-w)";
  for (auto dir = path.parent_path();; dir = dir.parent_path()) {
    struct stat d {};
    if (::stat(dir.c_str(), &d) != 0) break;
    const bool sticky_root = d.st_uid == 0 && (d.st_mode & S_ISVTX);
    if ((d.st_uid != 0 && d.st_uid != me) || ((d.st_mode & (S_IWGRP | S_IWOTH)) && !sticky_root))
      return path.string() + ": its directory " + dir.string() + " (owner " + owner(d.st_uid) +
             ", mode " + mode_text(d.st_mode) +
             ") lets another user replace it; a root tprosshy reads only files nobody else may "
             "change";
    if (dir == dir.parent_path()) break;
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> unsafe_file(const config& c) {
  std::vector<fs::path> files = c.files.empty() ? std::vector<fs::path>{c.file} : c.files;
  for (auto& p : c.profiles)
    for (std::size_t i = 0; i < p.ssh_args.size(); ++i) {
      const auto& a = p.ssh_args[i];
      std::string f = a == "-F" && i + 1 < p.ssh_args.size() ? p.ssh_args[++i]
                      : a.starts_with("-F")                  ? a.substr(2)
                                                             : "";
      if (!f.empty() && f != "none") files.emplace_back(f);
    }
  for (auto& f : files)
    if (auto why = unsafe_path(f)) return why;
  return std::nullopt;
}

std::string default_control_socket() {
  const auto uid = ::geteuid();
  if (uid == 0) return "/run/tprosshy/control.sock";
  auto owned_dir = [uid](const std::string& d) {
    struct stat st {};
    return !d.empty() && d.front() == '/' && ::stat(d.c_str(), &st) == 0 && S_ISDIR(st.st_mode) &&
           st.st_uid == uid;
  };
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x && owned_dir(x))
    return std::string(x) + "/tprosshy/control.sock";
  if (const auto run = "/run/user/" + std::to_string(uid); owned_dir(run))
    return run + "/tprosshy/control.sock";
  const char* home = std::getenv("HOME");
  std::string h = home && *home ? home : "";
  if (h.empty())
    if (const passwd* pw = ::getpwuid(uid); pw && pw->pw_dir) h = pw->pw_dir;
  return h + "/.cache/tprosshy/control.sock";
}

}  // namespace tprosshy::config
