#pragma once
// What a running tprosshy reports, as plain values: the runtime fills it in, the control
// socket prints it as text or JSON, and /metrics as Prometheus text. Counters only ever
// grow, reloads included.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tprosshy::control {

// One ssh of a profile (a host, a member of its pool).
struct tunnel_status {
  std::string host;
  unsigned member = 0;  // 1-based within the host's pool
  std::string state;    // "up", "starting", "down", "unhealthy", "draining"
  int ssh_pid = 0;
  std::string control_path;
  std::uint64_t flows_active = 0;
  std::optional<double> probe_ms;  // the last probe's latency
  std::string probe_failure;       // why the last failed probe failed
  // Probe latencies as a histogram: counts of observations <= each bound (seconds).
  std::vector<double> probe_bounds;
  std::vector<std::uint64_t> probe_buckets;
  std::uint64_t probe_count = 0;
  double probe_sum = 0;
};

struct profile_status {
  std::string name;
  std::string state;  // "up", "starting", "down", "draining"
  std::string host;
  int ssh_pid = 0;  // 0 while no ssh runs
  std::string control_path;
  std::optional<std::int64_t> up_since;  // Unix seconds, while up
  std::uint64_t restarts = 0;            // ssh exits after the tunnel had been up
  std::string last_error;                // ssh's last message, or why it cannot start
  std::uint64_t flows_active = 0;
  std::uint64_t flows_ok = 0;       // carried to their end
  std::uint64_t flows_reset = 0;    // reset after ssh took them (ssh went away, drain ended)
  std::uint64_t flows_refused = 0;  // reset before: refused, unreachable, no answer, down
  std::uint64_t bytes_up = 0;       // client to destination, exact
  std::uint64_t bytes_down = 0;
  std::map<std::string, std::uint64_t> dns_queries;  // by rcode name ("NOERROR", "SERVFAIL", ...)
  std::uint64_t learned_routes = 0;                  // addresses routed from DNS answers now
  std::uint64_t learned_evicted = 0;                 // pushed out by dns.learn_limit
  std::uint64_t refused_packets = 0;   // not TCP to its destinations: refused (other_protocols)
  std::string serving_host;            // where new flows go; "" while none
  std::uint64_t failovers = 0;         // new flows moved to another host
  std::vector<tunnel_status> tunnels;  // draining ones last
};

// DNS capture as the ruleset in the kernel holds it: udp/53 and tcp/53 to `resolvers` (or
// to any address, `all`) redirected to `port`. Not installed while no profile resolves
// names, before the ruleset is in, or when there is no resolver to capture.
struct dns_capture_status {
  bool installed = false;
  std::uint16_t port = 0;
  bool all = false;
  std::vector<std::string> resolvers;
};

struct status {
  std::string version;
  std::string config_file;
  std::int64_t started = 0;  // Unix seconds
  std::uint64_t reloads_ok = 0, reloads_failed = 0;
  std::optional<std::int64_t> last_reload_success;  // Unix seconds; the start counts as one
  std::uint64_t dns_cache_hits = 0;
  std::map<std::string, std::uint64_t> dns_local_queries;  // names no profile takes, by rcode
  dns_capture_status dns_capture;
  bool lockdown = false;                 // table inet tprosshy_lock is installed with the ruleset
  std::vector<profile_status> profiles;  // in config order; draining last
};

}  // namespace tprosshy::control
