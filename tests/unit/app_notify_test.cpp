// sd_notify without libsystemd: a datagram socket stands in for systemd's, bound at a path
// or an abstract name, and receives what tprosshy says, in order.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "app/notify.hpp"

namespace tprosshy::app {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

// systemd's end: a datagram socket at a path, or at "@name" in the abstract namespace.
class listener {
 public:
  explicit listener(const std::string& name) : name_(name) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, name.data(), name.size());
    if (name[0] == '@') a.sun_path[0] = '\0';
    const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), len) != 0)
      throw std::runtime_error("bind " + name + ": " + std::strerror(errno));
  }
  ~listener() {
    ::close(fd_);
    if (name_[0] == '/') ::unlink(name_.c_str());
  }

  // The next datagram, or "" if none comes within the limit.
  std::string next(std::chrono::milliseconds limit = 10s) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(limit.count())) <= 0) return "";
    char b[4096];
    const auto n = ::recv(fd_, b, sizeof b, 0);
    return n > 0 ? std::string(b, static_cast<std::size_t>(n)) : "";
  }

 private:
  std::string name_;
  int fd_ = -1;
};

std::string socket_path() {
  return (std::filesystem::temp_directory_path() / ("tp_notify_test." + std::to_string(::getpid())))
      .string();
}

std::uint64_t monotonic_usec() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

struct environment {
  environment(const char* socket, const char* usec = nullptr, const char* pid = nullptr) {
    set("NOTIFY_SOCKET", socket);
    set("WATCHDOG_USEC", usec);
    set("WATCHDOG_PID", pid);
  }
  ~environment() {
    for (auto v : {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}) ::unsetenv(v);
  }
  static void set(const char* k, const char* v) {
    if (v)
      ::setenv(k, v, 1);
    else
      ::unsetenv(k);
  }
};

TEST(AppNotify, SaysEachStepInOrder) {
  const auto path = socket_path();
  listener systemd(path);
  environment env(path.c_str());
  const auto n = notifier::from_environment();
  ASSERT_TRUE(n.enabled());
  EXPECT_TRUE(n.status("starting 2 profiles"));
  EXPECT_TRUE(n.ready("ready: 2/2 profiles up\nsecond line"));
  const auto before = monotonic_usec();
  EXPECT_TRUE(n.reloading());
  const auto after = monotonic_usec();
  EXPECT_TRUE(n.ready());
  EXPECT_TRUE(n.stopping());
  EXPECT_EQ(systemd.next(), "STATUS=starting 2 profiles");
  EXPECT_EQ(systemd.next(), "READY=1\nSTATUS=ready: 2/2 profiles up second line");
  const auto reloading = systemd.next();
  ASSERT_TRUE(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC=")) << reloading;
  const auto usec = std::stoull(reloading.substr(reloading.find('=', 12) + 1));
  EXPECT_GE(usec, before);
  EXPECT_LE(usec, after);
  EXPECT_EQ(systemd.next(), "READY=1");
  EXPECT_EQ(systemd.next(), "STOPPING=1");
  EXPECT_EQ(systemd.next(100ms), "");
}

TEST(AppNotify, AbstractSocket) {
  const auto name = "@tprosshy-notify-test-" + std::to_string(::getpid());
  listener systemd(name);
  environment env(name.c_str());
  EXPECT_TRUE(notifier::from_environment().ready());
  EXPECT_EQ(systemd.next(), "READY=1");
}

TEST(AppNotify, NothingWithoutNotifySocket) {
  environment env(nullptr, "1000000");
  const auto n = notifier::from_environment();
  EXPECT_FALSE(n.enabled());
  EXPECT_FALSE(n.ready());
  EXPECT_FALSE(n.stopping());
  EXPECT_FALSE(n.watchdog_interval());
  asio::io_context io;
  bool done = false;
  asio::co_spawn(io, n.watchdog(), [&](std::exception_ptr) { done = true; });
  io.run_for(5s);
  EXPECT_TRUE(done);
}

TEST(AppNotify, FailuresAreQuiet) {
  {
    environment env("relative/path");
    EXPECT_FALSE(notifier::from_environment().ready());
  }
  {
    environment env((socket_path() + ".nobody").c_str());  // nothing bound there
    EXPECT_FALSE(notifier::from_environment().ready());
  }
}

TEST(AppNotify, WatchdogInterval) {
  const auto pid = std::to_string(::getpid());
  const auto path = socket_path();
  {
    environment env(path.c_str(), "3000000");
    EXPECT_EQ(notifier::from_environment().watchdog_interval(), 1500000us);
  }
  {
    environment env(path.c_str(), "3000000", pid.c_str());
    EXPECT_EQ(notifier::from_environment().watchdog_interval(), 1500000us);
  }
  for (const char* usec : {"0", "", "x", "-5", "12s"}) {
    environment env(path.c_str(), usec);
    EXPECT_FALSE(notifier::from_environment().watchdog_interval()) << usec;
  }
  {
    environment env(path.c_str(), "3000000", "1");  // meant for another process
    EXPECT_FALSE(notifier::from_environment().watchdog_interval());
  }
}

TEST(AppNotify, WatchdogPingsUntilCancelled) {
  const auto path = socket_path();
  listener systemd(path);
  const auto pid = std::to_string(::getpid());
  environment env(path.c_str(), "100000", pid.c_str());  // every 50 ms
  const auto n = notifier::from_environment();
  asio::io_context io;
  asio::cancellation_signal cancel;
  bool ended = false;
  asio::co_spawn(io, n.watchdog(),
                 asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr e) {
                   ended = true;
                   EXPECT_FALSE(e);
                 }));
  for (int i = 0; i < 3; ++i) {
    std::string got;
    for (auto end = std::chrono::steady_clock::now() + 10s;
         got.empty() && std::chrono::steady_clock::now() < end;) {
      io.run_one_for(10ms);
      got = systemd.next(0ms);
    }
    EXPECT_EQ(got, "WATCHDOG=1") << i;
  }
  cancel.emit(asio::cancellation_type::terminal);
  io.run_for(5s);
  EXPECT_TRUE(ended);
  EXPECT_TRUE(io.stopped());  // nothing left to run: the loop is over
}

}  // namespace
}  // namespace tprosshy::app
