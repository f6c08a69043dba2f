#pragma once
// The nameservers of a resolv.conf text (this machine's, or a profile's remote one read
// with `cat`). Comments (# ;), other options and junk lines are skipped.
#include <boost/asio/ip/address.hpp>
#include <string_view>
#include <vector>

namespace tprosshy::dns {

// In file order, duplicates kept; an IPv6 zone ("fe80::1%eth0") is dropped with its
// scope, since a nameserver there cannot be reached by address alone.
std::vector<boost::asio::ip::address> parse_resolv_conf(std::string_view text);

}  // namespace tprosshy::dns
