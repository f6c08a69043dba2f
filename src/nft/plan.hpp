#pragma once
// Internal to src/nft: the ruleset laid out as the sets, chains and rules of one table.
// render() prints this plan and netlink encodes the very same plan, so the text that
// `tprosshy check` shows and what the kernel holds cannot drift apart.
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "nft/ruleset.hpp"

namespace tprosshy::nft::plan {

enum class family { v4, v6 };

struct set {
  std::string name;
  family fam = family::v4;
  bool interval = false;  // elements are ranges
  bool timeout = false;   // elements expire (learned addresses)
  std::string comment;
  std::vector<addr_range> elements;    // sorted, disjoint, not adjacent
  std::vector<learned_address> timed;  // timeout sets: single addresses with their timeout
};

// One match of a rule, in the order nft itself would encode it.
struct iifname {
  std::string name;
};
struct mark {
  uint32_t value;
};
struct l4proto {
  uint8_t proto;
};  // IPPROTO_TCP / IPPROTO_UDP
struct dport {
  uint16_t port;
};  // needs a preceding l4proto
struct daddr {
  net::address addr;
};
struct daddr_in {
  family fam;
  std::string set;
};
struct fib_type {
  uint8_t rtn;  // RTN_LOCAL, RTN_BROADCAST or RTN_MULTICAST: `fib daddr type local`
};
struct daddr_net {
  net::prefix net;  // `ip daddr 169.254.0.0/16`
};
struct icmpv6_type {
  uint8_t type;  // ND and router messages
};
struct ct_dnat {};  // `ct status dnat`: a nat rule redirected the packet's connection
struct skuid {
  uint32_t uid;
};  // the uid owning the packet's socket
using match = std::variant<iifname, mark, l4proto, dport, daddr, daddr_in, ct_dnat, skuid, fib_type,
                           daddr_net, icmpv6_type>;

struct ret {};
struct jump {
  std::string chain;
};
struct redirect {
  uint16_t port;
};
struct accept {};
// As a closed port answers: a TCP reset for TCP, ICMP port unreachable otherwise; or, with
// `prohibited`, ICMP administratively prohibited.
struct reject {
  bool tcp_reset = false;
  bool prohibited = false;
  std::optional<family> icmp;  // port unreachable in that family's ICMP, as nft picks after
                               // an `ip daddr` match
};
using verdict = std::variant<ret, jump, redirect, accept, reject>;

struct rule {
  std::vector<match> matches;
  verdict action;
  std::string comment;
  std::string counter;  // a named counter of the table the rule counts into, before `action`
};

enum class hook { none, output, prerouting, input, forward };

struct chain {
  std::string name;
  hook where = hook::none;  // none: a regular chain reached by jump
  int priority = -100;
  std::vector<rule> rules;
  bool filter = false;  // a filter chain; else nat (for a chain with a hook)
  std::string note;     // printed above the chain by render()
};

struct table {
  std::string name;
  std::vector<set> sets;
  std::vector<chain> chains;
  std::vector<std::string> counters;  // named counter objects
};

table make(const ruleset& r);
// The lock table of lockdown (ruleset.hpp): the same sets, refused in filter hooks that
// run after the main table's nat hooks, so only what it did not redirect meets them.
table make_lock(const ruleset& r);

// Set names by profile (profile names may start with a digit, nft names may not).
std::string routed_set(const std::string& profile, family f);
std::string learned_set(const std::string& profile, family f);
// The named counter of a profile's refused packets, and the profile a counter's name names.
std::string refused_counter(const std::string& profile);
std::optional<std::string> refused_profile(const std::string& counter);

// Sorted, overlapping and adjacent ranges merged.
std::vector<addr_range> normalize(std::vector<addr_range> ranges);

}  // namespace tprosshy::nft::plan
