#include "proxy/relay.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/system/system_error.hpp>
#include <cerrno>
#include <memory>
#include <utility>
#include <vector>

namespace tprosshy::proxy {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using asio::use_awaitable;

namespace {

constexpr int pipe_size = 256 * 1024;
// A direction that always finds data never suspends; yield after this much so one bulk
// flow cannot starve the others sharing the thread.
constexpr std::uint64_t yield_every = 1 << 20;

class unique_fd {
 public:
  unique_fd() = default;
  explicit unique_fd(int fd) : fd_(fd) {}
  unique_fd(unique_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& o) noexcept {
    if (this != &o) {
      if (fd_ >= 0) ::close(fd_);
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~unique_fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

struct pipe {
  unique_fd r, w;
  std::size_t capacity = 0;
  std::size_t held = 0;  // bytes in the pipe not yet written to the destination

  // false: the kernel refused a pipe (fd limit); the caller copies through a buffer.
  bool open() {
    int fds[2];
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return false;
    r = unique_fd(fds[0]);
    w = unique_fd(fds[1]);
    // A bigger pipe means fewer splice calls per MiB; a refusal (pipe-user-pages limits)
    // just leaves the default size.
    ::fcntl(w.get(), F_SETPIPE_SZ, pipe_size);
    const int size = ::fcntl(w.get(), F_GETPIPE_SZ);
    capacity = size > 0 ? static_cast<std::size_t>(size) : 65536;
    return true;
  }
};

// A direction holds a pipe only while it moves data: between bursts the (empty) pipe goes
// back here, so thousands of idle or slow flows share a few pipes instead of holding two
// descriptors each. Flows never change threads, so one pool per thread needs no lock.
class pipe_pool {
 public:
  pipe acquire() {
    if (free_.empty()) {
      pipe p;
      p.open();
      return p;
    }
    pipe p = std::move(free_.back());
    free_.pop_back();
    return p;
  }
  void release(pipe& p) {
    if (p.r && p.held == 0 && free_.size() < max_free) free_.push_back(std::move(p));
    p = pipe{};
  }

 private:
  static constexpr std::size_t max_free = 64;
  std::vector<pipe> free_;
};

thread_local pipe_pool pipes;

[[noreturn]] void throw_errno(int e) {
  throw boost::system::system_error(e, boost::system::system_category());
}

struct shared {
  relay_result result;
};

void note(shared& s, const boost::system::error_code& ec) {
  if (!s.result.error && ec != asio::error::operation_aborted) s.result.error = ec;
}

// Plain copy for descriptors splice(2) does not accept.
asio::awaitable<void> copy(tcp::socket& src, tcp::socket& dst, std::uint64_t& count, shared& s) {
  auto buf = std::make_unique<std::array<char, 65536>>();
  for (;;) {
    auto [ec, n] = co_await src.async_read_some(asio::buffer(*buf), asio::as_tuple(use_awaitable));
    if (ec == asio::error::eof) {
      boost::system::error_code ignored;
      dst.shutdown(tcp::socket::shutdown_send, ignored);
      co_return;
    }
    if (ec) {
      note(s, ec);
      throw boost::system::system_error(ec);
    }
    auto [wec, m] = co_await asio::async_write(dst, asio::buffer(buf->data(), n),
                                               asio::as_tuple(use_awaitable));
    if (wec) {
      note(s, wec);
      throw boost::system::system_error(wec);
    }
    count += m;
  }
}

asio::awaitable<void> drain(pipe& p, tcp::socket& dst, shared& s) {
  while (p.held > 0) {
    const ssize_t n = ::splice(p.r.get(), nullptr, dst.native_handle(), nullptr, p.held,
                               SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      p.held -= static_cast<std::size_t>(n);
    } else if (n < 0 && errno == EAGAIN) {
      co_await dst.async_wait(tcp::socket::wait_write, use_awaitable);
    } else if (n < 0 && errno != EINTR) {
      const int e = errno;
      note(s, {e, boost::system::system_category()});
      throw_errno(e);
    }
  }
}

// One direction. Returns normally at EOF (after passing it on), throws on any error so
// the && in relay() cancels the other direction.
asio::awaitable<void> pump(tcp::socket& src, tcp::socket& dst, std::uint64_t& count, shared& s) {
  pipe p;  // taken from the pool while data moves, so idle flows hold no pipe fds
  std::uint64_t since_yield = 0;
  for (;;) {
    since_yield = 0;
    pipes.release(p);
    try {
      co_await src.async_wait(tcp::socket::wait_read, use_awaitable);
    } catch (const boost::system::system_error& e) {
      note(s, e.code());
      throw;
    }
    p = pipes.acquire();
    if (!p.r) {  // no pipe to be had (fd limit): copy through a buffer instead
      co_await copy(src, dst, count, s);
      co_return;
    }
    for (;;) {
      const ssize_t n = ::splice(src.native_handle(), nullptr, p.w.get(), nullptr, p.capacity,
                                 SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        count += static_cast<std::uint64_t>(n);
        p.held = static_cast<std::size_t>(n);
        co_await drain(p, dst, s);
        if ((since_yield += static_cast<std::uint64_t>(n)) >= yield_every) {
          since_yield = 0;
          co_await asio::post(co_await asio::this_coro::executor, use_awaitable);
        }
        continue;
      }
      if (n == 0) {
        boost::system::error_code ignored;
        dst.shutdown(tcp::socket::shutdown_send, ignored);
        co_return;
      }
      if (errno == EAGAIN) break;
      if (errno == EINTR) continue;
      if (errno == EINVAL && count == 0) {
        co_await copy(src, dst, count, s);
        co_return;
      }
      const int e = errno;
      note(s, {e, boost::system::system_category()});
      throw_errno(e);
    }
  }
}

}  // namespace

void reset(tcp::socket& s) {
  boost::system::error_code ignored;
  s.set_option(tcp::socket::linger(true, 0), ignored);
  s.close(ignored);
}

asio::awaitable<relay_result> relay(tcp::socket& a, tcp::socket& b) {
  using namespace asio::experimental::awaitable_operators;
  shared s;
  boost::system::error_code ignored;
  // splice on a blocking socket would block the whole thread.
  a.native_non_blocking(true, ignored);
  b.native_non_blocking(true, ignored);
  try {
    co_await (pump(a, b, s.result.a_to_b, s) && pump(b, a, s.result.b_to_a, s));
    a.close(ignored);
    b.close(ignored);
  } catch (...) {
    // One direction failed; the other was cancelled, so this is often asio's
    // multiple_exceptions. The failure itself was noted where it happened.
    if (!s.result.error) s.result.error = asio::error::operation_aborted;
    reset(a);
    reset(b);
  }
  co_return s.result;
}

}  // namespace tprosshy::proxy
