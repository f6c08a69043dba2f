#include "proxy/socks_client.hpp"

#include <fmt/format.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "proxy/socks5.hpp"

namespace tprosshy::proxy {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;

std::string endpoint_text(const tcp::endpoint& e) {
  const auto a = e.address();
  return a.is_v6() ? fmt::format("[{}]:{}", a.to_string(), e.port())
                   : fmt::format("{}:{}", a.to_string(), e.port());
}

asio::awaitable<std::string> socks_connect(tcp::socket& up, const tcp::endpoint& socks,
                                           const tcp::endpoint& dst,
                                           std::span<const std::uint8_t> early) {
  auto [ec] = co_await up.async_connect(socks, as_tuple(use_awaitable));
  if (ec)
    co_return fmt::format("cannot reach SOCKS server {}: {}", endpoint_text(socks), ec.message());
  up.set_option(tcp::no_delay(true), ec);
  const auto request = socks5::encode_connect(dst);
  const std::array<asio::const_buffer, 2> out{asio::buffer(request), asio::buffer(early)};
  auto [wec, written] = co_await asio::async_write(up, out, as_tuple(use_awaitable));
  if (wec) co_return fmt::format("SOCKS request failed: {}", wec.message());

  std::array<std::uint8_t, socks5::max_answer> buf;
  std::size_t have = 0;
  auto answer = socks5::parse_answer({buf.data(), have});
  while (answer.state == socks5::status::incomplete) {
    auto [rec, n] = co_await asio::async_read(
        up, asio::buffer(buf.data() + have, answer.size - have), as_tuple(use_awaitable));
    have += n;
    answer = socks5::parse_answer({buf.data(), have});
    if (rec && answer.state == socks5::status::incomplete) {
      co_return rec == asio::error::eof
          ? fmt::format("SOCKS server closed the connection after {} answer bytes", have)
          : fmt::format("SOCKS reply failed: {}", rec.message());
    }
  }
  switch (answer.state) {
    case socks5::status::ok:
      co_return std::string();
    case socks5::status::refused:
      co_return fmt::format("SOCKS reply {} ({})", answer.code, socks5::describe(answer.code));
    default:
      co_return fmt::format("SOCKS protocol error: {}", answer.error);
  }
}

}  // namespace tprosshy::proxy
