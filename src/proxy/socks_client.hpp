#pragma once
// A SOCKS5 CONNECT through a tunnel's ssh -D, for relayed flows and for DNS alike.
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <span>
#include <string>

namespace tprosshy::proxy {

using tcp = boost::asio::ip::tcp;

// "1.2.3.4:80" or "[fd00::1]:80".
std::string endpoint_text(const tcp::endpoint& e);

// Connects `up` to the SOCKS server and asks it for `dst`, with `early` (the client's first
// bytes, if any) in the same write: OpenSSH's -D takes all of it and forwards the bytes once
// the channel opens, which saves the request a round trip. Reads exactly the reply, so no
// relayed byte is consumed. Empty on success, else why not.
boost::asio::awaitable<std::string> socks_connect(tcp::socket& up, const tcp::endpoint& socks,
                                                  const tcp::endpoint& dst,
                                                  std::span<const std::uint8_t> early = {});

}  // namespace tprosshy::proxy
