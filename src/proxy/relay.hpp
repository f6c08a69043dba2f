#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>
#include <cstdint>

namespace tprosshy::proxy {

struct relay_result {
  std::uint64_t a_to_b = 0;
  std::uint64_t b_to_a = 0;
  boost::system::error_code error;  // the first failure; both sockets were reset
};

// Copies both directions with splice(2) until each has seen EOF. A half-close is passed
// on (shutdown of the other side's write) and the other direction goes on; an error in
// either direction resets both sockets. Returns when both directions are done; the
// sockets are then closed.
boost::asio::awaitable<relay_result> relay(boost::asio::ip::tcp::socket& a,
                                           boost::asio::ip::tcp::socket& b);

// Closes with SO_LINGER {1, 0}, so the peer sees a reset rather than an orderly end.
void reset(boost::asio::ip::tcp::socket& s);

}  // namespace tprosshy::proxy
