#pragma once
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>
#include <optional>

namespace tprosshy::proxy {

// The destination a redirected flow was addressed to, from its conntrack NAT entry
// (SO_ORIGINAL_DST for IPv4, IP6T_SO_ORIGINAL_DST for IPv6). nullopt with `ec` set when
// the kernel has no such entry.
std::optional<boost::asio::ip::tcp::endpoint> original_dst(boost::asio::ip::tcp::socket& s,
                                                           boost::system::error_code& ec);

}  // namespace tprosshy::proxy
