#pragma once
#include <boost/asio/ip/address.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace tprosshy::net {

using address = boost::asio::ip::address;

// An IPv4 or IPv6 network in CIDR form; host bits are always zero.
struct prefix {
  address network;
  unsigned length = 0;

  bool is_v4() const { return network.is_v4(); }
  unsigned max_length() const { return is_v4() ? 32 : 128; }
  bool contains(const address& a) const;
  bool contains(const prefix& p) const;
  address first() const { return network; }
  address last() const;
  std::string to_string() const;
  friend bool operator==(const prefix&, const prefix&) = default;
};

// Parses "10.0.0.0/8", "fd00::/48", or a bare address (a host prefix). Host bits set
// ("10.1.2.3/16") is an error, so a typo never silently widens a route. On failure
// returns nullopt and, if given, sets *error to a sentence saying why.
std::optional<prefix> parse_prefix(std::string_view text, std::string* error = nullptr);

// Addresses as unsigned integers, for range arithmetic (IPv4 in the low 32 bits).
using u128 = unsigned __int128;
u128 to_u128(const address& a);
address from_u128(u128 v, bool v4);

}  // namespace tprosshy::net
