#pragma once
// The config model: plain values, already validated. YAML stays inside config/.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "net/prefix.hpp"

namespace tprosshy::config {

// Where a value came from; line and column are 1-based.
struct location {
  std::string file;
  int line = 0;
  int column = 0;
  std::string to_string() const;  // "file:line:column"
};

// A config error. what() is "file:line:column: message", ready to print.
class error : public std::runtime_error {
 public:
  error(location where, const std::string& message);
  const location& where() const { return where_; }
  const std::string& message() const { return message_; }

 protected:
  error(location where, const std::string& message, const std::string& what);

 private:
  location where_;
  std::string message_;
};

// A top-level config file that is missing or cannot be read (EX_NOINPUT): what() names it.
class unreadable : public std::system_error {
 public:
  using std::system_error::system_error;
};

// Every mistake a load found, at most limits::errors of them, in file order (the files in
// the order they were read, then line and column); never two at one place. what() is each
// error's what(), one per line, followed, when the load stopped at the limit, by a line
// "file:line:column: more errors from here on ..." at the first mistake not listed.
// where() and message() are those of the first error.
class errors : public error {
 public:
  explicit errors(std::vector<error> all, std::optional<location> more = std::nullopt);
  const std::vector<error>& all() const { return all_; }
  // Where the first mistake not in all() is, when the load stopped at the limit.
  const std::optional<location>& more() const { return more_; }

 private:
  std::vector<error> all_;
  std::optional<location> more_;
};

// "IP", "IPv4:port" or "[IPv6]:port", as used by dns.upstream and dns.nameserver.
struct endpoint {
  net::address address;
  std::optional<uint16_t> port;
  std::string to_string() const;  // same forms as parsed, IPv6 bracketed when a port is given
  friend bool operator==(const endpoint&, const endpoint&) = default;
};
std::optional<endpoint> parse_endpoint(std::string_view text);

enum class run_mode { local, gateway };
enum class dns_capture { resolvers, all };
enum class start_failure { exit, retry };

struct dns_rules {
  std::vector<std::string> domains;  // lower case, no trailing dot; "." = every name
  std::string nameserver = "auto";   // "auto" or IP[:port] (IPv6 as [addr]:port)
  bool learn_routes = true;
  std::size_t learn_limit = 65536;            // learned addresses per profile
  std::chrono::seconds learn_ttl_max{86400};  // a learned address's TTL, at most
};

struct health_rules {
  std::chrono::milliseconds interval{5000};
  std::chrono::milliseconds timeout{3000};
  std::optional<endpoint> probe;  // none: auto (the server's own ssh port, any answer counts)
  friend bool operator==(const health_rules&, const health_rules&) = default;
};

struct profile {
  std::string name;
  std::string host;                // ssh destination, expanded: the first of `hosts`
  std::vector<std::string> hosts;  // in failover order; hosts[0] == host
  unsigned pool = 1;               // ssh connections per host
  health_rules health;
  std::vector<std::string> host_keys;  // pinned, each "type base64"; empty: ssh's own files
  std::vector<std::string> ssh_args;   // the profile's own, then those of `defaults`
  std::vector<net::prefix> subnets;
  std::vector<net::prefix> exclude;
  dns_rules dns;
  bool refuse_other = true;  // other_protocols: reject (pass: false)
  bool enabled = true;
  location where;  // the profile's key
};

struct config {
  std::filesystem::path file;                // the top-level file, absolute
  std::vector<std::filesystem::path> files;  // every file read: this one, then its includes
  run_mode mode = run_mode::local;
  std::vector<std::string> gateway_interfaces;
  std::optional<net::address> listen_address;  // unset: 127.0.0.1 (local mode)
  uint16_t tcp_port = 0;                       // 0: any free port
  uint16_t dns_port = 0;
  std::vector<std::string> dns_upstream{"system"};
  dns_capture capture = dns_capture::resolvers;
  std::size_t cache_size = 10000;
  start_failure on_start_failure = start_failure::exit;
  std::chrono::milliseconds drain_timeout{300000};
  std::string control_socket = "/run/tprosshy/control.sock";
  std::string helper_socket = "/run/tprosshy-helper.sock";  // a user's way to its ruleset
  std::string ssh_user;                                     // empty: ssh runs as we do
  location ssh_user_at;                                     // where ssh_user was set
  // A kill switch (table inet tprosshy_lock) that refuses the routed destinations whenever
  // tprosshy is not carrying them, even after it died; root daemons only.
  bool lockdown = false;
  location lockdown_at;                    // where lockdown was set
  std::optional<endpoint> metrics_listen;  // none: no /metrics
  std::vector<net::prefix> exclude;        // global: never redirected
  std::string log_level = "info";
  std::vector<profile> profiles;  // in the order they were declared
};

// What a config may ask of the loader. Past any of these the load stops with a config::error
// that names the limit (tprosshy.yaml(5), LIMITS), so no input can crash, hang or exhaust
// memory.
namespace limits {
// One file, the top-level one included.
inline constexpr std::size_t file_bytes = 1024 * 1024;
// One key or value, as written and again after ${VAR} and ~ expansion.
inline constexpr std::size_t scalar_bytes = 4096;
// Maps and lists inside each other, in one file.
inline constexpr std::size_t nesting = 32;
// Nodes (maps, lists, keys and values) in all files, every use of an alias counting the
// whole value it stands for.
inline constexpr std::size_t nodes = 100'000;
// Bytes of keys and values in all files, counted like nodes.
inline constexpr std::size_t text_bytes = 8 * 1024 * 1024;
// Files read through include in one load, a file included twice counting twice.
inline constexpr std::size_t includes = 128;
// Includes inside includes: the top-level file is depth 0, its includes depth 1.
inline constexpr std::size_t include_depth = 8;
// Errors reported by one load (config::errors).
inline constexpr std::size_t errors = 20;
}  // namespace limits

// Reads, validates against schemas/tprosshy.schema.json, merges includes and defaults,
// expands ${VAR} and ~. Throws config::error; a missing or unreadable top-level file, or a
// directory, throws config::unreadable instead (the CLI maps it to EX_NOINPUT). A top-level
// file that is there but cannot be a config (a device, FIFO or socket, or a file larger than
// limits::file_bytes) is a config::error at file:1:1. Only regular files are read, and a
// FIFO never blocks the load.
//
// File names in errors are deterministic: the top-level file is named exactly as `file`
// was passed; an included file as the lexically normalised path of its includer's name
// joined with the include entry (an absolute entry stays absolute). So load("a.yaml") with
// `include: [inc/b.yaml]` reports "a.yaml:3:5: ..." and "inc/b.yaml:7:9: ...".
//
// Merging: included files first (in list order), then the including file on top. Maps merge
// key by key at every depth (so `profiles: {corp: {enabled: false}}` overrides one key of an
// included profile); lists and scalars are replaced, except the top-level `exclude`, which
// concatenates. Every file is checked against the schema on its own (without `required`,
// an included file may be partial), the merged result once more in full.
config load(const std::filesystem::path& file);

// The configuration `file` makes, as YAML: includes merged, `defaults` applied to every
// profile, ${VAR} and ~ expanded, and every key that has a built-in default and is not set
// shown with it. Each value is followed by a comment saying where it comes from, like
// `git config --show-origin`: "# file:line" (the file named as in errors) or "# default".
// Keys follow the schema's order; profiles keep theirs. Loading the result gives the same
// config, as long as no value holds "${" or starts with "~/" once expanded (it would be
// expanded again). Throws what load() throws.
std::string effective_yaml(const std::filesystem::path& file);

// A host key as "type base64" from a public key line ("ssh-ed25519 AAAA... comment") or a
// known_hosts line ("host,host ssh-ed25519 AAAA..."); nullopt, with why, if it is neither.
std::optional<std::string> parse_host_key(std::string_view line, std::string* why = nullptr);

// Where the tprosshy running with `file` listens for control requests: its control.socket,
// also when the file is otherwise invalid (so that `reload` can send it and have the
// errors reported); the default when it cannot be read at all.
std::filesystem::path control_socket_of(const std::filesystem::path& file);

// For a root daemon, as sshd's StrictModes: every file the config was read from, and every
// file ssh_args name with -F (whose `Match exec` runs commands), must be owned by root or by
// this process's user and writable by nobody else, and every directory above it writable
// by nobody else unless it is root's and sticky (as /tmp). The first file that is not, with
// its owner and mode; nullopt when all are.
std::optional<std::string> unsafe_file(const config& c);

// control.socket's default for whoever runs this: /run/tprosshy/control.sock for root; for
// another user $XDG_RUNTIME_DIR/tprosshy/control.sock, else /run/user/UID/tprosshy/ when
// that directory is the user's, else ~/.cache/tprosshy/ (created 0700 when it is used).
std::string default_control_socket();

}  // namespace tprosshy::config
