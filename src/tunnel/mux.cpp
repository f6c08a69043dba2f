#include "tunnel/mux.hpp"

#include <sys/socket.h>

#include <array>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/endian/conversion.hpp>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "net/fd_passing.hpp"

namespace tprosshy::tunnel::mux {

namespace asio = boost::asio;
using asio::use_awaitable;

namespace {

class writer {
 public:
  writer() { out_.resize(4); }
  writer& u32(std::uint32_t v) {
    auto at = out_.size();
    out_.resize(at + 4);
    boost::endian::store_big_u32(out_.data() + at, v);
    return *this;
  }
  writer& str(std::string_view s) {
    u32(static_cast<std::uint32_t>(s.size()));
    out_.insert(out_.end(), s.begin(), s.end());
    return *this;
  }
  bytes done() {
    boost::endian::store_big_u32(out_.data(), static_cast<std::uint32_t>(out_.size() - 4));
    return std::move(out_);
  }

 private:
  bytes out_;
};

class reader {
 public:
  explicit reader(std::span<const std::uint8_t> in) : in_(in) {}
  bool u32(std::uint32_t& v) {
    if (in_.size() < 4) return false;
    v = boost::endian::load_big_u32(in_.data());
    in_ = in_.subspan(4);
    return true;
  }
  bool str(std::string& s) {
    std::uint32_t n = 0;
    if (!u32(n) || in_.size() < n) return false;
    s.assign(in_.begin(), in_.begin() + n);
    in_ = in_.subspan(n);
    return true;
  }

 private:
  std::span<const std::uint8_t> in_;
};

}  // namespace

bytes encode_hello() { return writer().u32(hello).u32(version).done(); }

bytes encode_alive_check(std::uint32_t id) { return writer().u32(alive_check).u32(id).done(); }

bytes encode_stdio_fwd(std::uint32_t id, std::string_view host, std::uint16_t port) {
  // PROTOCOL.mux calls the port a string; every master since 5.x reads a uint32.
  return writer().u32(new_stdio_fwd).u32(id).str("").str(host).u32(port).done();
}

bytes encode_new_session(std::uint32_t id, std::string_view command) {
  return writer()
      .u32(new_session)
      .u32(id)
      .str("")  // reserved
      // PROTOCOL.mux calls these four flags bools; mux.c reads each as a uint32.
      .u32(0)           // tty
      .u32(0)           // X11
      .u32(0)           // agent
      .u32(0)           // subsystem
      .u32(0xffffffff)  // no escape character
      .str("")          // terminal type
      .str(command)
      .done();
}

std::optional<message> decode(std::span<const std::uint8_t> body) {
  reader r(body);
  message m;
  if (!r.u32(m.type)) return std::nullopt;
  switch (m.type) {
    case hello:
      if (!r.u32(m.value)) return std::nullopt;
      return m;  // extensions, if any, are ignored
    case ok:
      if (!r.u32(m.id)) return std::nullopt;
      return m;
    case permission_denied:
    case failure:
      if (!r.u32(m.id) || !r.str(m.text)) return std::nullopt;
      return m;
    case alive:
    case session_opened:
    case exit_message:
      if (!r.u32(m.id) || !r.u32(m.value)) return std::nullopt;
      return m;
    case tty_alloc_fail:
      if (!r.u32(m.id)) return std::nullopt;
      return m;
    default:
      return m;  // unknown: the caller decides
  }
}

asio::awaitable<message> read(socket& s) {
  std::array<std::uint8_t, 4> head;
  co_await asio::async_read(s, asio::buffer(head), use_awaitable);
  const auto n = boost::endian::load_big_u32(head.data());
  if (n > max_packet)
    throw std::runtime_error("mux packet of " + std::to_string(n) + " bytes; the limit is " +
                             std::to_string(max_packet));
  bytes body(n);
  co_await asio::async_read(s, asio::buffer(body), use_awaitable);
  auto m = decode(body);
  if (!m) throw std::runtime_error("malformed mux packet");
  co_return *m;
}

asio::awaitable<void> send_fds(socket& s, std::span<const int> fds) {
  for (int fd : fds) {
    for (;;) {
      const std::uint8_t byte = 0;
      if (net::send_with_fds(s.native_handle(), std::span(&byte, 1), std::span(&fd, 1),
                             MSG_DONTWAIT) == 1)
        break;
      if (errno == EAGAIN || errno == EINTR) {
        co_await s.async_wait(socket::wait_write, use_awaitable);
        continue;
      }
      throw boost::system::system_error(errno, boost::system::system_category(), "sendmsg");
    }
  }
}

asio::awaitable<socket> open(std::string path, bytes first, int master) {
  auto ex = co_await asio::this_coro::executor;
  socket s(ex);
  const asio::local::stream_protocol::endpoint ep(path);
  s.open();
  s.non_blocking(true);
  // A Unix socket's connect never waits: with the master's accept queue full it fails with
  // EAGAIN (Asio would then report a connect that never happened as done), so wait briefly
  // and try again. Callers cap connects per master well below its queue, so this is rare.
  asio::steady_timer pause(ex);
  while (::connect(s.native_handle(), ep.data(), static_cast<socklen_t>(ep.size())) != 0) {
    if (errno == EINTR) continue;
    if (errno != EAGAIN)
      throw boost::system::system_error(errno, boost::system::system_category(), "connect " + path);
    pause.expires_after(std::chrono::milliseconds(1));
    co_await pause.async_wait(use_awaitable);
  }
  if (master != 0) {
    ucred peer{};
    socklen_t len = sizeof peer;
    if (::getsockopt(s.native_handle(), SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0)
      throw boost::system::system_error(errno, boost::system::system_category(),
                                        "SO_PEERCRED " + path);
    if (peer.pid != master)
      throw std::runtime_error("control socket " + path + " is served by pid " +
                               std::to_string(peer.pid) + " (uid " + std::to_string(peer.uid) +
                               "), not by ssh (pid " + std::to_string(master) + ")");
  }
  co_await asio::async_write(s, asio::buffer(first), use_awaitable);
  co_return s;
}

asio::awaitable<void> expect_hello(socket& s) {
  auto m = co_await read(s);
  if (m.type != hello) throw std::runtime_error("the control socket did not answer with a hello");
  if (m.value != version)
    throw std::runtime_error("the ssh master speaks mux protocol " + std::to_string(m.value) +
                             ", not " + std::to_string(version));
}

}  // namespace tprosshy::tunnel::mux
