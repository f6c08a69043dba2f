#include "control/render.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <ctime>
#include <set>
#include <string_view>
#include <utility>

namespace tprosshy::control {

namespace {

// The length of the well-formed UTF-8 sequence at s[i] (RFC 3629: no overlong forms, no
// surrogates, nothing past U+10FFFF), or 0 if there is none.
std::size_t utf8_at(std::string_view s, std::size_t i) {
  auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned c = byte(i);
  if (c < 0x80) return 1;
  std::size_t n = 0;
  unsigned lo = 0x80, hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
  } else if (c == 0xe0) {
    n = 3, lo = 0xa0;
  } else if (c == 0xed) {
    n = 3, hi = 0x9f;
  } else if (c >= 0xe1 && c <= 0xef) {
    n = 3;
  } else if (c == 0xf0) {
    n = 4, lo = 0x90;
  } else if (c >= 0xf1 && c <= 0xf3) {
    n = 4;
  } else if (c == 0xf4) {
    n = 4, hi = 0x8f;
  } else {
    return 0;
  }
  if (i + n > s.size() || byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k)
    if (byte(i + k) < 0x80 || byte(i + k) > 0xbf) return 0;
  return n;
}

// Calls f(sequence) for each well-formed UTF-8 character and bad(byte) for each byte that
// is not part of one.
template <class Good, class Bad>
void each_char(std::string_view s, Good good, Bad bad) {
  for (std::size_t i = 0; i < s.size();) {
    const auto n = utf8_at(s, i);
    if (n == 0) {
      bad(static_cast<unsigned char>(s[i]));
      ++i;
    } else {
      good(s.substr(i, n));
      i += n;
    }
  }
}

std::string hex_escape(unsigned char c) {
  char b[5];
  std::snprintf(b, sizeof b, "\\x%02x", c);
  return b;
}

// ---- text

std::string printable(std::string_view s) {
  std::string o;
  each_char(
      s,
      [&](std::string_view ch) {
        const auto c = static_cast<unsigned char>(ch[0]);
        if (ch.size() > 1 || (c >= 0x20 && c != 0x7f))
          o += ch;
        else if (c == '\n')
          o += "\\n";
        else if (c == '\t')
          o += "\\t";
        else if (c == '\r')
          o += "\\r";
        else
          o += hex_escape(c);
      },
      [&](unsigned char c) { o += hex_escape(c); });
  return o;
}

std::string local_time(std::int64_t t) {
  const std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  char b[64];
  if (!::localtime_r(&tt, &tm) || std::strftime(b, sizeof b, "%Y-%m-%d %H:%M:%S %z", &tm) == 0)
    return "@" + std::to_string(t);
  return b;
}

std::string when(std::int64_t t, std::int64_t now) {
  return local_time(t) + " (" + human_age(now - t) + " ago)";
}

std::string counts(const std::map<std::string, std::uint64_t>& m) {
  std::string o;
  for (auto& [k, v] : m) o += (o.empty() ? "" : ", ") + printable(k) + " " + std::to_string(v);
  return o.empty() ? "none" : o;
}

std::string bytes(std::uint64_t n) {
  return n < 1024 ? human_bytes(n) : human_bytes(n) + " (" + std::to_string(n) + ")";
}

std::string capture(const dns_capture_status& c) {
  if (!c.installed) return "not installed";
  std::string to = c.all ? "every address" : "";
  for (auto& r : c.resolvers) to += (to.empty() ? "" : ", ") + printable(r);
  return "port " + std::to_string(c.port) + ", udp/53 and tcp/53 to " + to;
}

void line(std::string& o, std::string_view indent, std::string_view label, std::string_view v) {
  o += indent;
  o += label;
  o.append(label.size() < 16 ? 16 - label.size() : 1, ' ');  // long labels: still apart
  o += v;
  o += '\n';
}

// ---- JSON

void json_string(std::string& o, std::string_view s) {
  o += '"';
  each_char(
      s,
      [&](std::string_view ch) {
        const auto c = static_cast<unsigned char>(ch[0]);
        if (ch.size() > 1) {
          o += ch;
        } else if (c == '"' || c == '\\') {
          o += '\\';
          o += static_cast<char>(c);
        } else if (c == '\n') {
          o += "\\n";
        } else if (c == '\r') {
          o += "\\r";
        } else if (c == '\t') {
          o += "\\t";
        } else if (c < 0x20) {
          char b[7];
          std::snprintf(b, sizeof b, "\\u%04x", c);
          o += b;
        } else {
          o += static_cast<char>(c);
        }
      },
      [&](unsigned char) { o += "\\ufffd"; });
  o += '"';
}

// Pretty JSON, two spaces a level, written in order.
struct json {
  std::string o;
  int depth = 0;
  bool first = true;

  void next() {
    if (!first) o += ',';
    o += '\n';
    o.append(2 * depth, ' ');
    first = false;
  }
  void open(char c) {
    o += c;
    ++depth;
    first = true;
  }
  void close(char c) {
    --depth;
    if (!first) {
      o += '\n';
      o.append(2 * depth, ' ');
    }
    o += c;
    first = false;
  }
  void key(std::string_view k) {
    next();
    json_string(o, k);
    o += ": ";
  }
  void str(std::string_view k, std::string_view v) {
    key(k);
    json_string(o, v);
  }
  template <class Int>
  void num(std::string_view k, Int v) {
    key(k);
    o += std::to_string(v);
  }
  void time(std::string_view k, const std::optional<std::int64_t>& v) {
    key(k);
    o += v ? std::to_string(*v) : "null";
  }
  void counts(std::string_view k, const std::map<std::string, std::uint64_t>& m) {
    key(k);
    open('{');
    for (auto& [name, n] : m) num(name, n);
    close('}');
  }
};

// ---- Prometheus

void label_value(std::string& o, std::string_view s) {
  each_char(
      s,
      [&](std::string_view ch) {
        if (ch == "\\")
          o += "\\\\";
        else if (ch == "\"")
          o += "\\\"";
        else if (ch == "\n")
          o += "\\n";
        else
          o += ch;
      },
      [&](unsigned char) { o += "\xef\xbf\xbd"; });
}

using labels = std::initializer_list<std::pair<std::string_view, std::string_view>>;

struct prom {
  std::string o;

  // HELP texts here are constants with neither backslashes nor newlines to escape.
  void family(std::string_view name, std::string_view type, std::string_view help) {
    o.append("# HELP ").append(name).append(" ").append(help).append("\n");
    o.append("# TYPE ").append(name).append(" ").append(type).append("\n");
  }
  void sample(std::string_view name, labels ls, std::uint64_t v) {
    sample(name, ls, std::to_string(v));
  }
  void sample(std::string_view name, labels ls, std::int64_t v) {
    sample(name, ls, std::to_string(v));
  }
  void sample(std::string_view name, labels ls, const std::string& v) {
    o += name;
    if (ls.size()) {
      o += '{';
      bool first = true;
      for (auto& [k, val] : ls) {
        if (!first) o += ',';
        first = false;
        o.append(k).append("=\"");
        label_value(o, val);
        o += '"';
      }
      o += '}';
    }
    o.append(" ").append(v).append("\n");
  }
};

// The rcodes every series starts with, so that rate() sees them from zero.
const std::set<std::string> base_rcodes{"NOERROR", "NXDOMAIN", "SERVFAIL"};

void dns_samples(prom& p, std::string_view profile, const std::map<std::string, std::uint64_t>& m) {
  std::set<std::string> all = base_rcodes;
  for (auto& [k, v] : m) all.insert(k);
  for (auto& rcode : all) {
    const auto it = m.find(rcode);
    p.sample("tprosshy_dns_queries_total", {{"profile", profile}, {"rcode", rcode}},
             it == m.end() ? std::uint64_t{0} : it->second);
  }
}

}  // namespace

std::string human_bytes(std::uint64_t n) {
  if (n < 1024) return std::to_string(n) + " B";
  static constexpr const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(n);
  std::size_t u = 0;
  // 1023.96 KiB prints as 1024.0: show it as 1.0 MiB instead.
  while (v >= 1023.95 && u + 1 < std::size(units)) v /= 1024, ++u;
  char b[32];
  std::snprintf(b, sizeof b, "%.1f %s", v, units[u]);
  return b;
}

std::string human_age(std::int64_t s) {
  if (s < 0) s = 0;
  const std::int64_t d = s / 86400, h = s / 3600 % 24, m = s / 60 % 60, sec = s % 60;
  auto two = [](std::int64_t a, const char* ua, std::int64_t b, const char* ub) {
    return std::to_string(a) + ua + " " + std::to_string(b) + ub;
  };
  if (d) return two(d, "d", h, "h");
  if (h) return two(h, "h", m, "m");
  if (m) return two(m, "m", sec, "s");
  return std::to_string(sec) + "s";
}

std::string render_text(const status& s, std::int64_t now) {
  std::string o;
  o += "tprosshy " + printable(s.version) + ", running since " + when(s.started, now) + "\n";
  line(o, "", "config", printable(s.config_file));
  line(o, "", "reloads",
       std::to_string(s.reloads_ok) + " applied, " + std::to_string(s.reloads_failed) + " failed" +
           (s.last_reload_success ? "; last applied " + when(*s.last_reload_success, now) : ""));
  line(o, "", "dns",
       std::to_string(s.dns_cache_hits) +
           " cache hits; local names: " + counts(s.dns_local_queries));
  line(o, "", "dns capture", capture(s.dns_capture));
  line(o, "", "lockdown",
       s.lockdown ? "on: table inet tprosshy_lock refuses the routed destinations if tprosshy dies"
                  : "off");
  if (s.profiles.empty()) o += "\nno profiles\n";
  for (auto& p : s.profiles) {
    o += "\nprofile " + printable(p.name) + ": " + printable(p.state) + "\n";
    const auto in = "  ";
    line(o, in, "host", printable(p.host));
    line(o, in, "ssh pid", p.ssh_pid ? std::to_string(p.ssh_pid) : "-");
    line(o, in, "control path", p.control_path.empty() ? "-" : printable(p.control_path));
    line(o, in, "up since", p.up_since ? when(*p.up_since, now) : "-");
    line(o, in, "restarts", std::to_string(p.restarts));
    line(o, in, "last ssh error", p.last_error.empty() ? "-" : printable(p.last_error));
    line(o, in, "flows",
         std::to_string(p.flows_active) + " active; " + std::to_string(p.flows_ok) + " ok, " +
             std::to_string(p.flows_reset) + " reset, " + std::to_string(p.flows_refused) +
             " refused");
    line(o, in, "bytes up", bytes(p.bytes_up));
    line(o, in, "bytes down", bytes(p.bytes_down));
    line(o, in, "dns queries", counts(p.dns_queries));
    line(o, in, "learned routes",
         std::to_string(p.learned_routes) +
             (p.learned_evicted
                  ? "; " + std::to_string(p.learned_evicted) + " pushed out by dns.learn_limit"
                  : ""));
    line(o, in, "refused packets", std::to_string(p.refused_packets) + " (not tcp, not sent)");
    if (p.tunnels.size() > 1 || !p.serving_host.empty())
      line(o, in, "serving host",
           (p.serving_host.empty() ? std::string("-") : printable(p.serving_host)) + "; " +
               std::to_string(p.failovers) + " failovers");
    if (p.tunnels.size() > 1)
      for (auto& t : p.tunnels) {
        std::string v = printable(t.state) + ", ssh pid " +
                        (t.ssh_pid ? std::to_string(t.ssh_pid) : std::string("-")) + ", " +
                        std::to_string(t.flows_active) + " flows";
        if (t.probe_ms) v += ", probe " + fmt::format("{:.1f}", *t.probe_ms) + " ms";
        if (!t.probe_failure.empty()) v += " (last failed: " + printable(t.probe_failure) + ")";
        line(o, in, "tunnel " + printable(t.host) + "#" + std::to_string(t.member), v);
      }
  }
  return o;
}

std::string render_json(const status& s) {
  json j;
  j.open('{');
  j.str("version", s.version);
  j.str("config_file", s.config_file);
  j.num("started", s.started);
  j.num("reloads_ok", s.reloads_ok);
  j.num("reloads_failed", s.reloads_failed);
  j.time("last_reload_success", s.last_reload_success);
  j.num("dns_cache_hits", s.dns_cache_hits);
  j.counts("dns_local_queries", s.dns_local_queries);
  j.key("lockdown");
  j.o += s.lockdown ? "true" : "false";
  j.key("dns_capture");
  j.open('{');
  j.key("installed");
  j.o += s.dns_capture.installed ? "true" : "false";
  j.num("port", s.dns_capture.port);
  j.key("all");
  j.o += s.dns_capture.all ? "true" : "false";
  j.key("resolvers");
  j.open('[');
  for (auto& r : s.dns_capture.resolvers) {
    j.next();
    json_string(j.o, r);
  }
  j.close(']');
  j.close('}');
  j.key("profiles");
  j.open('[');
  for (auto& p : s.profiles) {
    j.next();
    j.open('{');
    j.str("name", p.name);
    j.str("state", p.state);
    j.str("host", p.host);
    j.num("ssh_pid", p.ssh_pid);
    j.str("control_path", p.control_path);
    j.time("up_since", p.up_since);
    j.num("restarts", p.restarts);
    j.str("last_error", p.last_error);
    j.num("flows_active", p.flows_active);
    j.num("flows_ok", p.flows_ok);
    j.num("flows_reset", p.flows_reset);
    j.num("flows_refused", p.flows_refused);
    j.num("bytes_up", p.bytes_up);
    j.num("bytes_down", p.bytes_down);
    j.counts("dns_queries", p.dns_queries);
    j.num("learned_routes", p.learned_routes);
    j.num("learned_evicted", p.learned_evicted);
    j.num("refused_packets", p.refused_packets);
    j.str("serving_host", p.serving_host);
    j.num("failovers", p.failovers);
    j.key("tunnels");
    j.open('[');
    for (auto& t : p.tunnels) {
      j.next();
      j.open('{');
      j.str("host", t.host);
      j.num("member", t.member);
      j.str("state", t.state);
      j.num("ssh_pid", t.ssh_pid);
      j.str("control_path", t.control_path);
      j.num("flows_active", t.flows_active);
      j.key("probe_ms");
      j.o += t.probe_ms ? fmt::format("{:.3f}", *t.probe_ms) : "null";
      j.str("probe_failure", t.probe_failure);
      j.num("probes", t.probe_count);
      j.close('}');
    }
    j.close(']');
    j.close('}');
  }
  j.close(']');
  j.close('}');
  j.o += '\n';
  return std::move(j.o);
}

std::string render_prometheus(const status& s) {
  prom p;
  p.family("tprosshy_build_info", "gauge", "Always 1; the label names the running version.");
  p.sample("tprosshy_build_info", {{"version", s.version}}, std::uint64_t{1});
  p.family("tprosshy_start_time_seconds", "gauge", "When this tprosshy started, in Unix seconds.");
  p.sample("tprosshy_start_time_seconds", {}, s.started);
  p.family("tprosshy_config_reloads_total", "counter",
           "Configuration reloads since the start, by result.");
  p.sample("tprosshy_config_reloads_total", {{"result", "success"}}, s.reloads_ok);
  p.sample("tprosshy_config_reloads_total", {{"result", "failure"}}, s.reloads_failed);
  p.family("tprosshy_config_last_reload_success_timestamp_seconds", "gauge",
           "When a configuration was last applied (the start counts), in Unix seconds.");
  if (s.last_reload_success)
    p.sample("tprosshy_config_last_reload_success_timestamp_seconds", {}, *s.last_reload_success);

  p.family("tprosshy_profile_up", "gauge", "1 while the profile's tunnel is up, else 0.");
  for (auto& x : s.profiles)
    p.sample("tprosshy_profile_up", {{"profile", x.name}}, std::uint64_t{x.state == "up"});
  p.family("tprosshy_tunnel_restarts_total", "counter",
           "ssh restarts after the profile's tunnel had been up.");
  for (auto& x : s.profiles)
    p.sample("tprosshy_tunnel_restarts_total", {{"profile", x.name}}, x.restarts);
  p.family("tprosshy_flows_active", "gauge", "TCP flows being carried now.");
  for (auto& x : s.profiles)
    p.sample("tprosshy_flows_active", {{"profile", x.name}}, x.flows_active);
  p.family("tprosshy_flows_total", "counter",
           "TCP flows that ended: ok (carried to their end), reset (after ssh took them), "
           "refused (before).");
  for (auto& x : s.profiles) {
    p.sample("tprosshy_flows_total", {{"profile", x.name}, {"result", "ok"}}, x.flows_ok);
    p.sample("tprosshy_flows_total", {{"profile", x.name}, {"result", "reset"}}, x.flows_reset);
    p.sample("tprosshy_flows_total", {{"profile", x.name}, {"result", "refused"}}, x.flows_refused);
  }
  p.family("tprosshy_bytes_total", "counter",
           "Bytes carried: up from clients to destinations, down back.");
  for (auto& x : s.profiles) {
    p.sample("tprosshy_bytes_total", {{"profile", x.name}, {"direction", "up"}}, x.bytes_up);
    p.sample("tprosshy_bytes_total", {{"profile", x.name}, {"direction", "down"}}, x.bytes_down);
  }
  p.family("tprosshy_dns_queries_total", "counter",
           "DNS queries answered, by profile and rcode; profile=\"\" for names no profile takes.");
  dns_samples(p, "", s.dns_local_queries);
  for (auto& x : s.profiles) dns_samples(p, x.name, x.dns_queries);
  p.family("tprosshy_dns_cache_hits_total", "counter", "DNS queries answered from the cache.");
  p.sample("tprosshy_dns_cache_hits_total", {}, s.dns_cache_hits);
  p.family("tprosshy_dns_capture_installed", "gauge",
           "1 while the ruleset redirects DNS to tprosshy's DNS port, else 0.");
  p.sample("tprosshy_dns_capture_installed", {}, std::uint64_t{s.dns_capture.installed});
  p.family("tprosshy_lockdown", "gauge",
           "1 while the lock table (lockdown) stands with the ruleset, else 0.");
  p.sample("tprosshy_lockdown", {}, std::uint64_t{s.lockdown});
  p.family("tprosshy_learned_routes", "gauge",
           "Addresses routed through the profile now because of DNS answers.");
  for (auto& x : s.profiles)
    p.sample("tprosshy_learned_routes", {{"profile", x.name}}, x.learned_routes);
  p.family("tprosshy_learned_evicted_total", "counter",
           "Learned addresses pushed out by dns.learn_limit, the oldest first.");
  for (auto& x : s.profiles)
    p.sample("tprosshy_learned_evicted_total", {{"profile", x.name}}, x.learned_evicted);
  p.family("tprosshy_refused_packets_total", "counter",
           "Packets to the profile's destinations that are not TCP, refused rather than sent "
           "in the clear (other_protocols: reject).");
  for (auto& x : s.profiles)
    p.sample("tprosshy_refused_packets_total", {{"profile", x.name}}, x.refused_packets);
  p.family("tprosshy_failovers_total", "counter", "Times new flows moved to another host.");
  for (auto& x : s.profiles)
    p.sample("tprosshy_failovers_total", {{"profile", x.name}}, x.failovers);
  // Per ssh: draining ones are left out, their host and member would repeat a live one's.
  p.family("tprosshy_tunnel_up", "gauge",
           "1 while the ssh (a host, a member of its pool) serves new flows, else 0.");
  for (auto& x : s.profiles)
    for (auto& t : x.tunnels)
      if (t.state != "draining")
        p.sample("tprosshy_tunnel_up",
                 {{"profile", x.name}, {"host", t.host}, {"member", std::to_string(t.member)}},
                 std::uint64_t{t.state == "up"});
  p.family("tprosshy_probe_duration_seconds", "histogram",
           "Health probes answered: time from the channel request to the master's answer.");
  for (auto& x : s.profiles)
    for (auto& t : x.tunnels) {
      if (t.state == "draining") continue;
      const std::string member = std::to_string(t.member);
      for (std::size_t i = 0; i < t.probe_bounds.size(); ++i)
        p.sample("tprosshy_probe_duration_seconds_bucket",
                 {{"profile", x.name},
                  {"host", t.host},
                  {"member", member},
                  {"le", fmt::format("{}", t.probe_bounds[i])}},
                 t.probe_buckets[i]);
      p.sample("tprosshy_probe_duration_seconds_bucket",
               {{"profile", x.name}, {"host", t.host}, {"member", member}, {"le", "+Inf"}},
               t.probe_count);
      p.sample("tprosshy_probe_duration_seconds_sum",
               {{"profile", x.name}, {"host", t.host}, {"member", member}},
               fmt::format("{}", t.probe_sum));
      p.sample("tprosshy_probe_duration_seconds_count",
               {{"profile", x.name}, {"host", t.host}, {"member", member}}, t.probe_count);
    }
  return std::move(p.o);
}

}  // namespace tprosshy::control
