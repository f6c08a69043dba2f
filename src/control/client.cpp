#include "control/client.hpp"

#include <sys/un.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <optional>

namespace tprosshy::control {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;
using local = asio::local::stream_protocol;

namespace {

// A status of every profile is a few hundred bytes each; this only stops a runaway.
constexpr std::size_t max_reply = 64 << 20;

asio::awaitable<reply> exchange(std::filesystem::path path, std::string line) {
  const auto where = path.string();
  local::socket s(co_await asio::this_coro::executor);
  auto [ec] = co_await s.async_connect(local::endpoint(where), as_tuple(use_awaitable));
  const auto v = ec.category() == boost::system::system_category() ? ec.value() : 0;
  if (v == ENOENT || v == ECONNREFUSED || v == ENOTDIR || v == ENOTSOCK)
    throw not_running(ec.value(), std::generic_category(), "no tprosshy is running on " + where);
  if (ec) throw std::system_error(ec.value(), std::generic_category(), where);
  // A server that refuses the request may close before reading all of it, and still
  // have answered: read whatever came either way.
  co_await asio::async_write(s, asio::buffer(line), as_tuple(use_awaitable));
  std::string wire;
  auto [rec, n] =
      co_await asio::async_read(s, asio::dynamic_buffer(wire, max_reply), as_tuple(use_awaitable));
  if (rec && rec != asio::error::eof && wire.empty())
    throw std::system_error(rec.value(), std::generic_category(), where);
  if (wire.empty())
    throw std::system_error(EBADMSG, std::generic_category(),
                            "tprosshy on " + where + " closed the connection without a reply");
  try {
    co_return decode(wire);
  } catch (const bad_request&) {
    throw std::system_error(EBADMSG, std::generic_category(),
                            "no whole reply from tprosshy on " + where);
  }
}

}  // namespace

reply call(const std::filesystem::path& socket, std::string_view line,
           std::chrono::milliseconds timeout) {
  if (socket.native().size() >= sizeof(sockaddr_un::sun_path))
    throw std::system_error(ENAMETOOLONG, std::generic_category(), socket.string());
  asio::io_context io(1);
  std::optional<reply> got;
  std::exception_ptr error;
  asio::co_spawn(io, exchange(socket, std::string(line) + "\n"),
                 [&](std::exception_ptr e, reply r) {
                   if (e)
                     error = e;
                   else
                     got = std::move(r);
                 });
  io.run_for(timeout);
  if (error) std::rethrow_exception(error);
  if (!got) {
    const auto t = timeout.count() % 1000 ? std::to_string(timeout.count()) + " ms"
                                          : std::to_string(timeout.count() / 1000) + " s";
    throw std::system_error(ETIMEDOUT, std::generic_category(),
                            "no reply from tprosshy on " + socket.string() + " within " + t);
  }
  return std::move(*got);
}

}  // namespace tprosshy::control
