#pragma once
// Destination address → profile, by longest prefix. The nft sets are derived from the same
// table (ranges()), so the kernel and the dispatcher can never disagree.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "net/prefix.hpp"

namespace tprosshy::routing {

using profile_id = std::size_t;
using clock = std::chrono::steady_clock;

// A maximal run of addresses [first, last] that route to one profile.
struct range {
  net::address first;
  net::address last;
  profile_id profile;
  friend bool operator==(const range&, const range&) = default;
};

class table {
 public:
  table();
  ~table();
  table(table&&) noexcept;
  table& operator=(table&&) noexcept;

  // A profile's subnet. Two subnets with the same prefix are a config error, caught by
  // the config loader; here the later one replaces the earlier.
  void add_subnet(const net::prefix& p, profile_id profile);
  // A profile's exclude: those addresses do not go through `owner` (they go direct unless
  // a longer prefix of another profile claims them; at equal length a subnet wins).
  void add_exclude(const net::prefix& p, profile_id owner);
  // A global exclude: never routed, whatever any profile or learned entry says.
  void add_global_exclude(const net::prefix& p);
  // An address learned from a profile's DNS answer; routes to it until `expiry`. A profile
  // holds at most `limit` learned addresses: past it, the one learned (or refreshed) longest
  // ago goes, and is returned.
  std::optional<net::address> learn(const net::address& a, profile_id profile,
                                    clock::time_point expiry, std::size_t limit = SIZE_MAX);
  // Drops learned entries that have expired; returns how many.
  std::size_t expire(clock::time_point now);

  struct learned_route {
    net::address address;
    profile_id profile;
    clock::time_point expiry;
    std::uint64_t order;  // when it was learned or refreshed: larger is later
  };
  // The learned entries still live at `now` (for a reload, which carries them over).
  std::vector<learned_route> learned(clock::time_point now = clock::now()) const;

  // Global excludes first, then live learned addresses, then the longest static prefix.
  // A v4-mapped IPv6 address (::ffff:a.b.c.d) is looked up, and learned, as IPv4.
  std::optional<profile_id> lookup(const net::address& a,
                                   clock::time_point now = clock::now()) const;

  // The static routes (subnets minus excludes), as sorted, disjoint, merged ranges of one
  // address family.
  std::vector<range> ranges(bool v6) const;
  const std::vector<net::prefix>& global_excludes() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace tprosshy::routing
