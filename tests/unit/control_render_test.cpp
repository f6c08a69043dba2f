// The renderers against golden outputs, and their output through real parsers: Boost.JSON
// for JSON, and a strict Prometheus text-format (0.0.4) checker written here.
#include <gtest/gtest.h>

#include <boost/json/src.hpp>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "control/render.hpp"

namespace tprosshy::control {
namespace {

using namespace std::string_literals;

// The same zone for every test, whatever the machine's.
void time_zone(const char* tz) {
  ::setenv("TZ", tz, 1);
  ::tzset();
}

status sample() {
  status s;
  s.version = "0.1.0";
  s.config_file = "/etc/tprosshy/config.yaml";
  s.started = 1700000000;
  s.reloads_ok = 3;
  s.reloads_failed = 1;
  s.last_reload_success = 1700003600;
  s.dns_cache_hits = 42;
  s.dns_local_queries = {{"NOERROR", 10}, {"NXDOMAIN", 1}};
  s.dns_capture = {true, 5353, false, {"127.0.0.53", "fd00::53"}};
  s.lockdown = true;
  profile_status a;
  a.name = "corp";
  a.state = "up";
  a.host = "corp-bastion";
  a.ssh_pid = 4242;
  a.control_path = "/run/tprosshy/tprosshy.Ab12Cd/corp";
  a.up_since = 1700000005;
  a.restarts = 1;
  a.last_error = "Connection to 198.18.0.2 port 22 timed out\r\nbanner: \x1b[1m";
  a.flows_active = 3;
  a.flows_ok = 120;
  a.flows_reset = 4;
  a.flows_refused = 2;
  a.bytes_up = 1572864;
  a.bytes_down = 18446744073709551615ull;
  a.dns_queries = {{"NOERROR", 100}, {"SERVFAIL", 2}};
  a.learned_routes = 5;
  a.learned_evicted = 7;
  a.refused_packets = 12;
  a.serving_host = "corp-bastion";
  a.failovers = 2;
  tunnel_status t1;
  t1.host = "corp-bastion";
  t1.member = 1;
  t1.state = "up";
  t1.ssh_pid = 4242;
  t1.control_path = "/run/tprosshy/tprosshy.Ab12Cd/corp.0.0";
  t1.flows_active = 3;
  t1.probe_ms = 1.25;
  t1.probe_bounds = {0.001, 0.01};
  t1.probe_buckets = {1, 4};
  t1.probe_count = 5;
  t1.probe_sum = 0.03;
  tunnel_status t2 = t1;
  t2.host = "corp-bastion-2";
  t2.state = "unhealthy";
  t2.ssh_pid = 4243;
  t2.flows_active = 0;
  t2.probe_failure = "no answer from ssh within 3000 ms";
  a.tunnels = {t1, t2};
  profile_status b;
  b.name = "lab";
  b.state = "down";
  b.host = "ssh://admin@lab.example:2222";
  b.last_error = "Permission denied (publickey).";
  s.profiles = {a, b};
  return s;
}

const std::int64_t now = 1700000000 + 7260;

const std::string golden_text =
    R"golden(tprosshy 0.1.0, running since 2023-11-14 22:13:20 +0000 (2h 1m ago)
config          /etc/tprosshy/config.yaml
reloads         3 applied, 1 failed; last applied 2023-11-14 23:13:20 +0000 (1h 1m ago)
dns             42 cache hits; local names: NOERROR 10, NXDOMAIN 1
dns capture     port 5353, udp/53 and tcp/53 to 127.0.0.53, fd00::53
lockdown        on: table inet tprosshy_lock refuses the routed destinations if tprosshy dies

profile corp: up
  host            corp-bastion
  ssh pid         4242
  control path    /run/tprosshy/tprosshy.Ab12Cd/corp
  up since        2023-11-14 22:13:25 +0000 (2h 0m ago)
  restarts        1
  last ssh error  Connection to 198.18.0.2 port 22 timed out\r\nbanner: \x1b[1m
  flows           3 active; 120 ok, 4 reset, 2 refused
  bytes up        1.5 MiB (1572864)
  bytes down      16.0 EiB (18446744073709551615)
  dns queries     NOERROR 100, SERVFAIL 2
  learned routes  5; 7 pushed out by dns.learn_limit
  refused packets 12 (not tcp, not sent)
  serving host    corp-bastion; 2 failovers
  tunnel corp-bastion#1 up, ssh pid 4242, 3 flows, probe 1.2 ms
  tunnel corp-bastion-2#1 unhealthy, ssh pid 4243, 0 flows, probe 1.2 ms (last failed: no answer from ssh within 3000 ms)

profile lab: down
  host            ssh://admin@lab.example:2222
  ssh pid         -
  control path    -
  up since        -
  restarts        0
  last ssh error  Permission denied (publickey).
  flows           0 active; 0 ok, 0 reset, 0 refused
  bytes up        0 B
  bytes down      0 B
  dns queries     none
  learned routes  0
  refused packets 0 (not tcp, not sent)
)golden";

const std::string golden_json = R"golden({
  "version": "0.1.0",
  "config_file": "/etc/tprosshy/config.yaml",
  "started": 1700000000,
  "reloads_ok": 3,
  "reloads_failed": 1,
  "last_reload_success": 1700003600,
  "dns_cache_hits": 42,
  "dns_local_queries": {
    "NOERROR": 10,
    "NXDOMAIN": 1
  },
  "lockdown": true,
  "dns_capture": {
    "installed": true,
    "port": 5353,
    "all": false,
    "resolvers": [
      "127.0.0.53",
      "fd00::53"
    ]
  },
  "profiles": [
    {
      "name": "corp",
      "state": "up",
      "host": "corp-bastion",
      "ssh_pid": 4242,
      "control_path": "/run/tprosshy/tprosshy.Ab12Cd/corp",
      "up_since": 1700000005,
      "restarts": 1,
      "last_error": "Connection to 198.18.0.2 port 22 timed out\r\nbanner: \u001b[1m",
      "flows_active": 3,
      "flows_ok": 120,
      "flows_reset": 4,
      "flows_refused": 2,
      "bytes_up": 1572864,
      "bytes_down": 18446744073709551615,
      "dns_queries": {
        "NOERROR": 100,
        "SERVFAIL": 2
      },
      "learned_routes": 5,
      "learned_evicted": 7,
      "refused_packets": 12,
      "serving_host": "corp-bastion",
      "failovers": 2,
      "tunnels": [
        {
          "host": "corp-bastion",
          "member": 1,
          "state": "up",
          "ssh_pid": 4242,
          "control_path": "/run/tprosshy/tprosshy.Ab12Cd/corp.0.0",
          "flows_active": 3,
          "probe_ms": 1.250,
          "probe_failure": "",
          "probes": 5
        },
        {
          "host": "corp-bastion-2",
          "member": 1,
          "state": "unhealthy",
          "ssh_pid": 4243,
          "control_path": "/run/tprosshy/tprosshy.Ab12Cd/corp.0.0",
          "flows_active": 0,
          "probe_ms": 1.250,
          "probe_failure": "no answer from ssh within 3000 ms",
          "probes": 5
        }
      ]
    },
    {
      "name": "lab",
      "state": "down",
      "host": "ssh://admin@lab.example:2222",
      "ssh_pid": 0,
      "control_path": "",
      "up_since": null,
      "restarts": 0,
      "last_error": "Permission denied (publickey).",
      "flows_active": 0,
      "flows_ok": 0,
      "flows_reset": 0,
      "flows_refused": 0,
      "bytes_up": 0,
      "bytes_down": 0,
      "dns_queries": {},
      "learned_routes": 0,
      "learned_evicted": 0,
      "refused_packets": 0,
      "serving_host": "",
      "failovers": 0,
      "tunnels": []
    }
  ]
}
)golden";

const std::string golden_prometheus =
    R"golden(# HELP tprosshy_build_info Always 1; the label names the running version.
# TYPE tprosshy_build_info gauge
tprosshy_build_info{version="0.1.0"} 1
# HELP tprosshy_start_time_seconds When this tprosshy started, in Unix seconds.
# TYPE tprosshy_start_time_seconds gauge
tprosshy_start_time_seconds 1700000000
# HELP tprosshy_config_reloads_total Configuration reloads since the start, by result.
# TYPE tprosshy_config_reloads_total counter
tprosshy_config_reloads_total{result="success"} 3
tprosshy_config_reloads_total{result="failure"} 1
# HELP tprosshy_config_last_reload_success_timestamp_seconds When a configuration was last applied (the start counts), in Unix seconds.
# TYPE tprosshy_config_last_reload_success_timestamp_seconds gauge
tprosshy_config_last_reload_success_timestamp_seconds 1700003600
# HELP tprosshy_profile_up 1 while the profile's tunnel is up, else 0.
# TYPE tprosshy_profile_up gauge
tprosshy_profile_up{profile="corp"} 1
tprosshy_profile_up{profile="lab"} 0
# HELP tprosshy_tunnel_restarts_total ssh restarts after the profile's tunnel had been up.
# TYPE tprosshy_tunnel_restarts_total counter
tprosshy_tunnel_restarts_total{profile="corp"} 1
tprosshy_tunnel_restarts_total{profile="lab"} 0
# HELP tprosshy_flows_active TCP flows being carried now.
# TYPE tprosshy_flows_active gauge
tprosshy_flows_active{profile="corp"} 3
tprosshy_flows_active{profile="lab"} 0
# HELP tprosshy_flows_total TCP flows that ended: ok (carried to their end), reset (after ssh took them), refused (before).
# TYPE tprosshy_flows_total counter
tprosshy_flows_total{profile="corp",result="ok"} 120
tprosshy_flows_total{profile="corp",result="reset"} 4
tprosshy_flows_total{profile="corp",result="refused"} 2
tprosshy_flows_total{profile="lab",result="ok"} 0
tprosshy_flows_total{profile="lab",result="reset"} 0
tprosshy_flows_total{profile="lab",result="refused"} 0
# HELP tprosshy_bytes_total Bytes carried: up from clients to destinations, down back.
# TYPE tprosshy_bytes_total counter
tprosshy_bytes_total{profile="corp",direction="up"} 1572864
tprosshy_bytes_total{profile="corp",direction="down"} 18446744073709551615
tprosshy_bytes_total{profile="lab",direction="up"} 0
tprosshy_bytes_total{profile="lab",direction="down"} 0
# HELP tprosshy_dns_queries_total DNS queries answered, by profile and rcode; profile="" for names no profile takes.
# TYPE tprosshy_dns_queries_total counter
tprosshy_dns_queries_total{profile="",rcode="NOERROR"} 10
tprosshy_dns_queries_total{profile="",rcode="NXDOMAIN"} 1
tprosshy_dns_queries_total{profile="",rcode="SERVFAIL"} 0
tprosshy_dns_queries_total{profile="corp",rcode="NOERROR"} 100
tprosshy_dns_queries_total{profile="corp",rcode="NXDOMAIN"} 0
tprosshy_dns_queries_total{profile="corp",rcode="SERVFAIL"} 2
tprosshy_dns_queries_total{profile="lab",rcode="NOERROR"} 0
tprosshy_dns_queries_total{profile="lab",rcode="NXDOMAIN"} 0
tprosshy_dns_queries_total{profile="lab",rcode="SERVFAIL"} 0
# HELP tprosshy_dns_cache_hits_total DNS queries answered from the cache.
# TYPE tprosshy_dns_cache_hits_total counter
tprosshy_dns_cache_hits_total 42
# HELP tprosshy_dns_capture_installed 1 while the ruleset redirects DNS to tprosshy's DNS port, else 0.
# TYPE tprosshy_dns_capture_installed gauge
tprosshy_dns_capture_installed 1
# HELP tprosshy_lockdown 1 while the lock table (lockdown) stands with the ruleset, else 0.
# TYPE tprosshy_lockdown gauge
tprosshy_lockdown 1
# HELP tprosshy_learned_routes Addresses routed through the profile now because of DNS answers.
# TYPE tprosshy_learned_routes gauge
tprosshy_learned_routes{profile="corp"} 5
tprosshy_learned_routes{profile="lab"} 0
# HELP tprosshy_learned_evicted_total Learned addresses pushed out by dns.learn_limit, the oldest first.
# TYPE tprosshy_learned_evicted_total counter
tprosshy_learned_evicted_total{profile="corp"} 7
tprosshy_learned_evicted_total{profile="lab"} 0
# HELP tprosshy_refused_packets_total Packets to the profile's destinations that are not TCP, refused rather than sent in the clear (other_protocols: reject).
# TYPE tprosshy_refused_packets_total counter
tprosshy_refused_packets_total{profile="corp"} 12
tprosshy_refused_packets_total{profile="lab"} 0
# HELP tprosshy_failovers_total Times new flows moved to another host.
# TYPE tprosshy_failovers_total counter
tprosshy_failovers_total{profile="corp"} 2
tprosshy_failovers_total{profile="lab"} 0
# HELP tprosshy_tunnel_up 1 while the ssh (a host, a member of its pool) serves new flows, else 0.
# TYPE tprosshy_tunnel_up gauge
tprosshy_tunnel_up{profile="corp",host="corp-bastion",member="1"} 1
tprosshy_tunnel_up{profile="corp",host="corp-bastion-2",member="1"} 0
# HELP tprosshy_probe_duration_seconds Health probes answered: time from the channel request to the master's answer.
# TYPE tprosshy_probe_duration_seconds histogram
tprosshy_probe_duration_seconds_bucket{profile="corp",host="corp-bastion",member="1",le="0.001"} 1
tprosshy_probe_duration_seconds_bucket{profile="corp",host="corp-bastion",member="1",le="0.01"} 4
tprosshy_probe_duration_seconds_bucket{profile="corp",host="corp-bastion",member="1",le="+Inf"} 5
tprosshy_probe_duration_seconds_sum{profile="corp",host="corp-bastion",member="1"} 0.03
tprosshy_probe_duration_seconds_count{profile="corp",host="corp-bastion",member="1"} 5
tprosshy_probe_duration_seconds_bucket{profile="corp",host="corp-bastion-2",member="1",le="0.001"} 1
tprosshy_probe_duration_seconds_bucket{profile="corp",host="corp-bastion-2",member="1",le="0.01"} 4
tprosshy_probe_duration_seconds_bucket{profile="corp",host="corp-bastion-2",member="1",le="+Inf"} 5
tprosshy_probe_duration_seconds_sum{profile="corp",host="corp-bastion-2",member="1"} 0.03
tprosshy_probe_duration_seconds_count{profile="corp",host="corp-bastion-2",member="1"} 5
)golden";

// ---- a strict reader of the Prometheus text format 0.0.4

bool metric_name(std::string_view s) {
  if (s.empty()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool label_name(std::string_view s) {
  return metric_name(s) && s.find(':') == std::string_view::npos && !s.starts_with("__");
}

// Boost.JSON checks UTF-8 in strings; what JSON itself would refuse is blanked first.
bool valid_utf8(std::string_view s) {
  std::string q = "\"";
  for (char c : s) q += (c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20) ? ' ' : c;
  try {
    boost::json::parse(q + "\"");
    return true;
  } catch (...) {
    return false;
  }
}

bool number(std::string_view s) {
  if (s == "+Inf" || s == "-Inf" || s == "NaN") return true;
  const std::string t(s);
  char* end = nullptr;
  std::strtod(t.c_str(), &end);
  return !t.empty() && end == t.c_str() + t.size();
}

struct exposition {
  std::vector<std::string> errors;
  std::map<std::string, std::string> types;   // family → type
  std::map<std::string, std::string> help;    // family → text, unescaped
  std::map<std::string, std::string> values;  // series → value
  std::map<std::string, std::vector<std::map<std::string, std::string>>>
      labels;  // family → each sample's
};

// Every error found, with its line number.
exposition read_prometheus(std::string_view text) {
  exposition x;
  auto error = [&](int n, const std::string& why) {
    x.errors.push_back("line " + std::to_string(n) + ": " + why);
  };
  if (text.empty() || text.back() != '\n') x.errors.push_back("does not end with a newline");
  std::set<std::string> sampled;  // families with samples, in order: each one contiguous
  std::string current;
  int n = 0;
  for (std::size_t pos = 0; pos < text.size();) {
    auto nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    const auto line = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++n;
    if (line.empty()) {
      error(n, "blank line");
      continue;
    }
    if (line.starts_with("# HELP ") || line.starts_with("# TYPE ")) {
      const bool is_help = line[2] == 'H';
      const auto rest = line.substr(7);
      const auto sp = rest.find(' ');
      const auto name = std::string(rest.substr(0, sp));
      const auto arg = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
      if (!metric_name(name)) error(n, "bad metric name '" + name + "'");
      if (sampled.count(name)) error(n, name + ": HELP or TYPE after its samples");
      if (is_help) {
        if (x.help.count(name)) error(n, name + ": second HELP");
        std::string h;
        for (std::size_t i = 0; i < arg.size(); ++i) {
          if (arg[i] != '\\') {
            h += arg[i];
          } else if (i + 1 < arg.size() && (arg[i + 1] == '\\' || arg[i + 1] == 'n')) {
            h += arg[++i] == 'n' ? '\n' : '\\';
          } else {
            error(n, name + ": bad escape in HELP");
          }
        }
        x.help[name] = h;
      } else {
        if (x.types.count(name)) error(n, name + ": second TYPE");
        static const std::set<std::string_view> kinds{"counter", "gauge", "histogram", "summary",
                                                      "untyped"};
        if (!kinds.count(arg)) error(n, name + ": bad type '" + std::string(arg) + "'");
        x.types[name] = arg;
      }
      continue;
    }
    if (line.starts_with('#')) continue;  // a comment
    // name{label="value",...} value [timestamp]
    std::size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    const auto name = std::string(line.substr(0, i));
    if (!metric_name(name)) error(n, "bad metric name '" + name + "'");
    // A histogram's samples are its family's name with _bucket, _sum or _count.
    auto family = name;
    for (std::string_view suffix : {"_bucket", "_sum", "_count"})
      if (name.ends_with(suffix)) {
        const auto stem = name.substr(0, name.size() - suffix.size());
        if (auto t = x.types.find(stem); t != x.types.end() && t->second == "histogram")
          family = stem;
      }
    if (family != name && name.ends_with("_bucket") && line.find("le=\"") == std::string_view::npos)
      error(n, name + ": a bucket without le");
    if (!x.types.count(family)) error(n, name + ": sample before its TYPE");
    if (!x.help.count(family)) error(n, name + ": sample before its HELP");
    if (family != current && sampled.count(family)) error(n, family + ": samples not together");
    current = family;
    sampled.insert(family);
    std::map<std::string, std::string> ls;
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const auto eq = line.find('=', i);
        if (eq == std::string_view::npos) {
          error(n, "label without '='");
          break;
        }
        const auto key = std::string(line.substr(i, eq - i));
        if (!label_name(key)) error(n, "bad label name '" + key + "'");
        i = eq + 1;
        if (i >= line.size() || line[i] != '"') {
          error(n, "label value not quoted");
          break;
        }
        ++i;
        std::string v;
        bool closed = false;
        while (i < line.size()) {
          const char c = line[i++];
          if (c == '"') {
            closed = true;
            break;
          }
          if (c != '\\') {
            v += c;
          } else if (i < line.size() && (line[i] == '\\' || line[i] == '"' || line[i] == 'n')) {
            const char e = line[i++];
            v += e == 'n' ? '\n' : e;
          } else {
            error(n, "bad escape in a label value");
          }
        }
        if (!closed) error(n, "label value not closed");
        if (!valid_utf8(v)) error(n, "label value is not UTF-8");
        if (!ls.emplace(key, v).second) error(n, "label '" + key + "' twice");
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (i >= line.size() || line[i] != '}') error(n, "labels not closed");
      ++i;
    }
    if (i >= line.size() || line[i] != ' ') {
      error(n, "no value");
      continue;
    }
    const auto rest = line.substr(i + 1);
    const auto sp = rest.find(' ');
    const auto value = rest.substr(0, sp);
    if (!number(value)) error(n, "bad value '" + std::string(value) + "'");
    if (sp != std::string_view::npos && !number(rest.substr(sp + 1))) error(n, "bad timestamp");
    if (x.types[family] == "counter" && !name.ends_with("_total"))
      error(n, name + ": a counter without _total");
    std::string series = name;
    for (auto& [k, v] : ls) series += "|" + k + "=" + v;
    if (!x.values.emplace(series, std::string(value)).second) error(n, "series twice: " + series);
    x.labels[name].push_back(ls);
  }
  for (auto& [name, type] : x.types)
    if (!x.help.count(name)) x.errors.push_back(name + ": TYPE without HELP");
  for (auto& [name, h] : x.help)
    if (!x.types.count(name)) x.errors.push_back(name + ": HELP without TYPE");
  return x;
}

std::string joined(const std::vector<std::string>& v) {
  std::string o;
  for (auto& s : v) o += s + "\n";
  return o;
}

// ---- golden outputs

TEST(ControlRender, WriteGoldenWhenAsked) {
  if (!std::getenv("TPROSSHY_UPDATE_GOLDEN")) GTEST_SKIP();
  time_zone("UTC");
  std::ofstream("/tmp/golden_text") << render_text(sample(), now);
  std::ofstream("/tmp/golden_json") << render_json(sample());
  std::ofstream("/tmp/golden_prometheus") << render_prometheus(sample());
}

TEST(ControlRender, TextGolden) {
  time_zone("UTC");
  EXPECT_EQ(render_text(sample(), now), golden_text);
}

TEST(ControlRender, JsonGolden) { EXPECT_EQ(render_json(sample()), golden_json); }

TEST(ControlRender, PrometheusGolden) { EXPECT_EQ(render_prometheus(sample()), golden_prometheus); }

TEST(ControlRender, TextUsesTheLocalTimeZone) {
  time_zone("XYZ-2");  // two hours east of UTC
  const auto t = render_text(sample(), now);
  EXPECT_NE(t.find("running since 2023-11-15 00:13:20 +0200 (2h 1m ago)"), std::string::npos) << t;
  time_zone("UTC");
}

TEST(ControlRender, TextWithoutProfilesOrReloads) {
  time_zone("UTC");
  status s;
  s.version = "0.1.0";
  s.started = 1700000000;
  EXPECT_EQ(render_text(s, 1700000000 - 5),  // a clock that went back shows no negative age
            "tprosshy 0.1.0, running since 2023-11-14 22:13:20 +0000 (0s ago)\n"
            "config          \n"
            "reloads         0 applied, 0 failed\n"
            "dns             0 cache hits; local names: none\n"
            "dns capture     not installed\n"
            "lockdown        off\n"
            "\nno profiles\n");
}

TEST(ControlRender, HumanUnits) {
  EXPECT_EQ(human_bytes(0), "0 B");
  EXPECT_EQ(human_bytes(1023), "1023 B");
  EXPECT_EQ(human_bytes(1024), "1.0 KiB");
  EXPECT_EQ(human_bytes(1536), "1.5 KiB");
  EXPECT_EQ(human_bytes(1048575), "1.0 MiB");  // not "1024.0 KiB"
  EXPECT_EQ(human_bytes(5ull << 30), "5.0 GiB");
  EXPECT_EQ(human_bytes(3ull << 40), "3.0 TiB");
  EXPECT_EQ(human_age(0), "0s");
  EXPECT_EQ(human_age(59), "59s");
  EXPECT_EQ(human_age(61), "1m 1s");
  EXPECT_EQ(human_age(3725), "1h 2m");
  EXPECT_EQ(human_age(90061), "1d 1h");
  EXPECT_EQ(human_age(-3), "0s");
}

// ---- awkward strings

status awkward() {
  auto s = sample();
  s.version = "1.0 \"beta\"\\x";
  s.config_file = "/etc/t\xffprosshy/\xc3\xa9t\xc3\xa9.yaml";  // bad byte, then é
  s.profiles[0].name = "a\"b\\c\nd";
  s.profiles[0].last_error = "nul \0 tab \t del \x7f "s + "\xe2\x82\xac \xed\xa0\x80";
  s.profiles[0].dns_queries["RCODE\"12\""] = 7;
  s.dns_local_queries["\xc0\xaf"] = 1;  // an overlong "/": not UTF-8
  return s;
}

TEST(ControlRender, JsonIsValidAndExact) {
  const auto v = boost::json::parse(render_json(awkward()));  // validates UTF-8, too
  const auto& o = v.as_object();
  EXPECT_EQ(o.at("version").as_string(), "1.0 \"beta\"\\x");
  EXPECT_EQ(o.at("config_file").as_string(), "/etc/t\xef\xbf\xbdprosshy/\xc3\xa9t\xc3\xa9.yaml");
  EXPECT_EQ(o.at("started").as_int64(), 1700000000);
  EXPECT_EQ(o.at("dns_local_queries").as_object().at("\xef\xbf\xbd\xef\xbf\xbd").as_int64(), 1);
  const auto& p = o.at("profiles").as_array().at(0).as_object();
  EXPECT_EQ(p.at("name").as_string(), "a\"b\\c\nd");
  EXPECT_EQ(p.at("last_error").as_string(),
            "nul \0 tab \t del \x7f "s + "\xe2\x82\xac \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
  EXPECT_EQ(p.at("bytes_down").as_uint64(), 18446744073709551615ull);
  EXPECT_EQ(p.at("dns_queries").as_object().at("RCODE\"12\"").as_int64(), 7);
  EXPECT_TRUE(o.at("profiles").as_array().at(1).as_object().at("up_since").is_null());
  std::set<std::string> keys;
  for (auto& kv : p) keys.insert(std::string(kv.key()));
  EXPECT_EQ(keys,
            (std::set<std::string>{
                "name",           "state",           "host",         "ssh_pid",      "control_path",
                "up_since",       "restarts",        "last_error",   "flows_active", "flows_ok",
                "flows_reset",    "flows_refused",   "bytes_up",     "bytes_down",   "dns_queries",
                "learned_routes", "learned_evicted", "serving_host", "failovers",    "tunnels",
                "refused_packets"}));
}

TEST(ControlRender, TextEscapesWhatATerminalWouldAct) {
  time_zone("UTC");
  const auto t = render_text(awkward(), now);
  EXPECT_NE(t.find("profile a\"b\\c\\nd: up"), std::string::npos) << t;
  EXPECT_NE(t.find("nul \\x00 tab \\t del \\x7f \xe2\x82\xac \\xed\\xa0\\x80\n"), std::string::npos)
      << t;
  EXPECT_NE(t.find("/etc/t\\xffprosshy/\xc3\xa9t\xc3\xa9.yaml"), std::string::npos) << t;
  for (char c : t) EXPECT_TRUE(c == '\n' || static_cast<unsigned char>(c) >= 0x20) << t;
}

TEST(ControlRender, PrometheusParses) {
  for (const auto& s : {sample(), awkward(), status{}}) {
    const auto text = render_prometheus(s);
    const auto x = read_prometheus(text);
    EXPECT_TRUE(x.errors.empty()) << joined(x.errors) << text;
  }
}

TEST(ControlRender, PrometheusLabelsRoundTrip) {
  const auto x = read_prometheus(render_prometheus(awkward()));
  ASSERT_TRUE(x.errors.empty()) << joined(x.errors);
  EXPECT_EQ(x.values.at("tprosshy_profile_up|profile=a\"b\\c\nd"), "1");
  EXPECT_EQ(x.values.at("tprosshy_build_info|version=1.0 \"beta\"\\x"), "1");
  EXPECT_EQ(x.values.at("tprosshy_dns_queries_total|profile=a\"b\\c\nd|rcode=RCODE\"12\""), "7");
  EXPECT_EQ(x.values.at("tprosshy_dns_queries_total|profile=|rcode=\xef\xbf\xbd\xef\xbf\xbd"), "1");
}

TEST(ControlRender, PrometheusFamiliesAndLabels) {
  const auto x = read_prometheus(render_prometheus(sample()));
  ASSERT_TRUE(x.errors.empty()) << joined(x.errors);
  const std::map<std::string, std::string> want{
      {"tprosshy_build_info", "gauge"},
      {"tprosshy_start_time_seconds", "gauge"},
      {"tprosshy_config_reloads_total", "counter"},
      {"tprosshy_config_last_reload_success_timestamp_seconds", "gauge"},
      {"tprosshy_profile_up", "gauge"},
      {"tprosshy_tunnel_restarts_total", "counter"},
      {"tprosshy_flows_active", "gauge"},
      {"tprosshy_flows_total", "counter"},
      {"tprosshy_bytes_total", "counter"},
      {"tprosshy_dns_queries_total", "counter"},
      {"tprosshy_dns_cache_hits_total", "counter"},
      {"tprosshy_dns_capture_installed", "gauge"},
      {"tprosshy_learned_routes", "gauge"},
      {"tprosshy_lockdown", "gauge"},
      {"tprosshy_learned_evicted_total", "counter"},
      {"tprosshy_refused_packets_total", "counter"},
      {"tprosshy_failovers_total", "counter"},
      {"tprosshy_tunnel_up", "gauge"},
      {"tprosshy_probe_duration_seconds", "histogram"},
  };
  EXPECT_EQ(x.types, want);
  // Labels per profile, and per configured ssh host and pool member: nothing names a
  // destination or anything else a flow brings in, so the series stay few.
  static const std::set<std::string> allowed{"profile", "result", "direction", "rcode",
                                             "version", "host",   "member",    "le"};
  for (auto& [family, samples] : x.labels)
    for (auto& ls : samples)
      for (auto& [k, v] : ls) EXPECT_TRUE(allowed.count(k)) << family << " has label " << k;
  EXPECT_EQ(x.values.at("tprosshy_flows_total|profile=corp|result=refused"), "2");
  EXPECT_EQ(x.values.at("tprosshy_bytes_total|direction=down|profile=corp"),
            "18446744073709551615");
  // Every profile's DNS series start at zero, so rate() sees the first SERVFAIL.
  EXPECT_EQ(x.values.at("tprosshy_dns_queries_total|profile=lab|rcode=SERVFAIL"), "0");
  EXPECT_EQ(x.values.at("tprosshy_tunnel_up|host=corp-bastion|member=1|profile=corp"), "1");
  EXPECT_EQ(x.values.at("tprosshy_tunnel_up|host=corp-bastion-2|member=1|profile=corp"), "0");
  EXPECT_EQ(x.values.at("tprosshy_failovers_total|profile=corp"), "2");
  EXPECT_EQ(x.values.at("tprosshy_probe_duration_seconds_bucket|host=corp-bastion|le=+Inf|member=1|"
                        "profile=corp"),
            "5");
}

TEST(ControlRender, PrometheusWithoutAReloadTimeHasNoSample) {
  auto s = sample();
  s.last_reload_success.reset();
  const auto x = read_prometheus(render_prometheus(s));
  ASSERT_TRUE(x.errors.empty()) << joined(x.errors);
  EXPECT_TRUE(x.types.count("tprosshy_config_last_reload_success_timestamp_seconds"));
  EXPECT_FALSE(x.labels.count("tprosshy_config_last_reload_success_timestamp_seconds"));
}

// The checker itself must catch what it is there to catch.
TEST(ControlRender, CheckerRejectsBadExpositions) {
  auto bad = [](std::string_view text) { return !read_prometheus(text).errors.empty(); };
  const std::string head = "# HELP a_total A.\n# TYPE a_total counter\n";
  EXPECT_FALSE(bad(head + "a_total{x=\"1\"} 1\n"));
  EXPECT_TRUE(bad("a_total 1\n" + head));                               // sample first
  EXPECT_TRUE(bad(head + "# TYPE a_total counter\na_total 1\n"));       // TYPE twice
  EXPECT_TRUE(bad(head + "a_total{x=\"a\"b\"} 1\n"));                   // unescaped quote
  EXPECT_TRUE(bad(head + "a_total{x=\"a\\tb\"} 1\n"));                  // bad escape
  EXPECT_TRUE(bad(head + "a_total{x=\"\xff\"} 1\n"));                   // not UTF-8
  EXPECT_TRUE(bad(head + "a_total{x=\"1\"} 1\na_total{x=\"1\"} 2\n"));  // series twice
  EXPECT_TRUE(bad(head + "a_total{1x=\"1\"} 1\n"));                     // label name
  EXPECT_TRUE(bad(head + "a_total one\n"));                             // value
  EXPECT_TRUE(bad(head + "a_total 1"));                                 // no newline
  EXPECT_TRUE(bad("# HELP b B.\n# TYPE b counter\nb 1\n"));             // no _total
  EXPECT_TRUE(bad("# TYPE c gauge\nc 1\n"));                            // no HELP
  EXPECT_TRUE(bad(head + "# HELP g G.\n# TYPE g gauge\na_total 1\ng 1\na_total{y=\"\"} 1\n"));
  EXPECT_TRUE(bad(head + "a_total 1\n\n"));                   // blank line
  EXPECT_TRUE(bad("# HELP 9a A.\n# TYPE 9a gauge\n9a 1\n"));  // metric name
}

}  // namespace
}  // namespace tprosshy::control
