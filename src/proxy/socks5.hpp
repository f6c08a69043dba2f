#pragma once
// The SOCKS5 client side (RFC 1928, no authentication, CONNECT only) as pure functions, so
// the byte layout is testable without sockets.
#include <boost/asio/ip/tcp.hpp>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tprosshy::proxy::socks5 {

// Largest answer: method selection (2) + reply head (4) + domain (1 + 255) + port (2).
inline constexpr std::size_t max_answer = 264;

// Greeting offering "no authentication" followed by CONNECT to `dst` (ATYP 1 or 4), in one
// buffer: OpenSSH's -D server reads both from a single write, saving a round trip.
std::vector<std::uint8_t> encode_connect(const boost::asio::ip::tcp::endpoint& dst);

enum class status {
  ok,          // complete success reply; `size` bytes were consumed
  incomplete,  // `size` is the total number of bytes needed before parsing can go on
  refused,     // the server answered REP != 0 (`code`)
  malformed,   // not SOCKS5 as we asked for it (`error` says why)
};

struct answer {
  status state = status::incomplete;
  std::size_t size = 0;
  int code = -1;           // REP once seen
  std::string bound;       // BND.ADDR:PORT when ok
  std::string_view error;  // when malformed
};

// Parses the server's whole answer to encode_connect(): the method selection (05 00) and
// the CONNECT reply. Reading exactly `size` bytes at each step never reads past the reply.
answer parse_answer(std::span<const std::uint8_t> in);

// RFC 1928 meaning of a REP code, for the log.
std::string_view describe(int code);

}  // namespace tprosshy::proxy::socks5
