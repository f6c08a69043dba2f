#include "app/notify.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>

#include "net/fd.hpp"

namespace tprosshy::app {

namespace asio = boost::asio;

namespace {

std::optional<std::uint64_t> number(const char* s) {
  if (!s || !*s) return std::nullopt;
  std::uint64_t v = 0;
  const auto end = s + std::strlen(s);
  const auto [p, ec] = std::from_chars(s, end, v);
  if (ec != std::errc() || p != end) return std::nullopt;
  return v;
}

bool send_to(const std::string& socket, std::string_view message) {
  if (socket.empty()) return false;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  // "@name" is abstract: a leading NUL and no terminating one.
  if ((socket[0] != '/' && socket[0] != '@') || socket.size() >= sizeof a.sun_path) {
    spdlog::warn("NOTIFY_SOCKET={}: not a socket path or @name; not notifying", socket);
    return false;
  }
  std::memcpy(a.sun_path, socket.data(), socket.size());
  if (socket[0] == '@') a.sun_path[0] = '\0';
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket.size() +
                                          (socket[0] == '/' ? 1 : 0));
  net::unique_fd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd || ::sendto(fd.get(), message.data(), message.size(), MSG_NOSIGNAL | MSG_DONTWAIT,
                      reinterpret_cast<const sockaddr*>(&a),
                      len) != static_cast<ssize_t>(message.size())) {
    spdlog::warn("sd_notify {}: {}", socket, std::strerror(errno));
    return false;
  }
  return true;
}

std::string one_line(std::string_view s) {
  std::string o(s);
  for (auto& c : o)
    if (c == '\n' || c == '\r') c = ' ';
  return o;
}

asio::awaitable<void> ping(std::string socket, std::chrono::microseconds every) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    send_to(socket, "WATCHDOG=1");
    timer.expires_after(every);
    auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;  // cancelled
  }
}

asio::awaitable<void> nothing() { co_return; }

}  // namespace

notifier notifier::from_environment() {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  std::optional<std::chrono::microseconds> usec;
  const auto pid = number(std::getenv("WATCHDOG_PID"));
  if (const auto v = number(std::getenv("WATCHDOG_USEC"));
      v && *v > 0 && (!pid || *pid == static_cast<std::uint64_t>(::getpid())))
    usec = std::chrono::microseconds(*v);
  return notifier(socket ? socket : "", usec);
}

notifier::notifier(std::string socket, std::optional<std::chrono::microseconds> watchdog_usec)
    : socket_(std::move(socket)), watchdog_usec_(watchdog_usec) {}

bool notifier::send(std::string_view message) const { return send_to(socket_, message); }

bool notifier::ready(std::string_view status) const {
  return send(status.empty() ? std::string("READY=1") : "READY=1\nSTATUS=" + one_line(status));
}

bool notifier::status(std::string_view line) const { return send("STATUS=" + one_line(line)); }

bool notifier::reloading() const {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  const auto usec = static_cast<std::uint64_t>(ts.tv_sec) * 1000000 +
                    static_cast<std::uint64_t>(ts.tv_nsec) / 1000;
  return send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec));
}

bool notifier::stopping() const { return send("STOPPING=1"); }

std::optional<std::chrono::microseconds> notifier::watchdog_interval() const {
  if (!enabled() || !watchdog_usec_) return std::nullopt;
  return *watchdog_usec_ / 2;
}

asio::awaitable<void> notifier::watchdog() const {
  // A copy: the loop may outlive this object.
  if (const auto every = watchdog_interval()) return ping(socket_, *every);
  return nothing();
}

}  // namespace tprosshy::app
