#pragma once
// The ruleset as a plain value. render() prints it as nft text (for `check` and golden
// tests); nft::netlink installs the very same value as one libnftnl batch.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "net/prefix.hpp"

namespace tprosshy::nft {

struct addr_range {
  net::address first;  // inclusive
  net::address last;   // inclusive
  friend bool operator==(const addr_range&, const addr_range&) = default;
};

// A destination that must never be redirected: a profile's ssh server (or a jump host).
struct endpoint {
  net::address address;
  uint16_t port = 22;
  std::string profile;
  friend bool operator==(const endpoint&, const endpoint&) = default;
};

// An address learned from a DNS answer, with the time it has left.
struct learned_address {
  net::address address;
  std::chrono::seconds ttl{0};
  friend bool operator==(const learned_address&, const learned_address&) = default;
};

struct profile_routes {
  std::string name;            // profile name; names its sets and is the rules' comment
  std::vector<addr_range> v4;  // routed ranges (subnets minus excludes), disjoint, sorted
  std::vector<addr_range> v6;
  bool learned = false;  // has learned-address timeout sets (DNS learn_routes)
  // Addresses already learned, so that a new ruleset (a reload) keeps them, in the same
  // batch. Only with `learned`.
  std::vector<learned_address> known;
  // Everything but TCP to these destinations is refused at once (UDP with ICMP port
  // unreachable, the rest admin-prohibited) rather than sent in the clear.
  bool refuse_other = false;
  friend bool operator==(const profile_routes&, const profile_routes&) = default;
};

// The kill switch's table: no owner flag, so it stays when every process is gone, refusing
// the routed destinations to whatever the main table does not redirect.
inline constexpr const char* lock_table = "tprosshy_lock";

// What an install does with the lock table: leave it alone (a user's ruleset), put this
// ruleset's lock in its place, or remove it if there is one.
enum class lock_mode { leave, on, off };

struct ruleset {
  std::string table = "tprosshy";
  uint32_t mark = 0;                    // packets of tprosshy's own sockets; never redirected
  bool output = true;                   // nat output hook: this machine's own traffic
  std::vector<std::string> interfaces;  // nat prerouting hook on these (gateway mode)
  uint16_t tcp_port = 0;                // where routed TCP is redirected
  bool capture_dns = false;             // redirect DNS (udp/53, tcp/53) to dns_port
  uint16_t dns_port = 0;
  bool capture_all_dns = false;  // every udp/53 and tcp/53, not just `resolvers`
  std::vector<net::address> resolvers;
  std::vector<endpoint> bypass;      // ssh servers
  std::vector<net::prefix> exclude;  // global excludes
  std::vector<profile_routes> profiles;
  // Only this uid's sockets are redirected (every redirect rule matches `meta skuid` first):
  // a table installed for a user by the helper.
  std::optional<uint32_t> skuid;
  lock_mode lock = lock_mode::leave;
  friend bool operator==(const ruleset&, const ruleset&) = default;
};

// nft -f syntax: `nft -f` on the output recreates the table (without the owner flag, which
// only a netlink client can hold), and with lock_mode::on the lock table after it.
std::string render(const ruleset& r);

}  // namespace tprosshy::nft
