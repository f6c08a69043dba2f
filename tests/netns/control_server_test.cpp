// The control socket and the CLI's client against each other, as root: the socket file's
// mode, owner and directory, stale and live sockets, symbolic links, request bounds and
// deadlines, and replies while a reload is still running.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "control/client.hpp"
#include "control/render.hpp"
#include "control/server.hpp"
#include "io_thread.hpp"

namespace tprosshy::control {
namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using tprosshy::testing::io_thread;

status sample() {
  status s;
  s.version = "0.1.0";
  s.started = 1700000000;
  profile_status p;
  p.name = "corp";
  p.state = "up";
  p.flows_ok = 7;
  s.profiles.push_back(p);
  return s;
}

int connect_to(const fs::path& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Everything until the peer closes; throws if it does not close within `limit`.
std::string read_to_end(int fd, std::chrono::milliseconds limit = 10s) {
  std::string got;
  const auto end = std::chrono::steady_clock::now() + limit;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (left <= 0ms) throw std::runtime_error("the server did not close in time");
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char b[4096];
    const auto n = ::read(fd, b, sizeof b);
    if (n <= 0) return got;
    got.append(b, static_cast<std::size_t>(n));
  }
}

// A socket file nobody listens on, as a tprosshy killed with SIGKILL leaves it.
void make_stale(const fs::path& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
  ::close(fd);
}

int error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::system_error& e) {
    return e.code().value();
  }
  return 0;
}

class ControlServer : public ::testing::Test {
 protected:
  void SetUp() override {
    static int n = 0;
    dir = fs::temp_directory_path() /
          ("tp_control_test." + std::to_string(::getpid()) + "." + std::to_string(n++));
    fs::remove_all(dir);
    fs::create_directory(dir);
    fs::permissions(dir, fs::perms::owner_all);
    path = dir / "control.sock";
    h.status = [] { return sample(); };
    h.reload = [this](std::string config) -> asio::awaitable<reply> {
      reloads.push_back(config);
      co_return reply{78, config + ":1:1: no\n"};
    };
  }
  void TearDown() override { fs::remove_all(dir); }

  std::shared_ptr<server> serve(server_limits limits = {}) {
    auto s = io.make<server>(io.executor(), path, h, limits);
    io.on_io([&] { s->start(); });
    return s;
  }

  io_thread io;
  fs::path dir, path;
  handlers h;
  std::vector<std::string> reloads;  // touched on the io thread only while a server runs
};

TEST_F(ControlServer, CreatesAPrivateSocketAndDirectory) {
  path = dir / "run" / "tprosshy" / "control.sock";
  auto s = serve();
  struct stat st {};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, ::geteuid());
  for (auto d : {dir / "run", dir / "run" / "tprosshy"}) {
    ASSERT_EQ(::stat(d.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u) << d;
  }
  EXPECT_EQ(s->path(), path);
}

TEST_F(ControlServer, AnswersStatusAsTextAndJson) {
  auto s = serve();
  const auto text = call(path, "status", 10s);
  EXPECT_EQ(text.code, 0);
  EXPECT_TRUE(text.text.starts_with("tprosshy 0.1.0, running since ")) << text.text;
  EXPECT_NE(text.text.find("profile corp: up\n"), std::string::npos) << text.text;
  EXPECT_EQ(call(path, "status json", 10s), (reply{0, render_json(sample())}));
}

TEST_F(ControlServer, ReloadGoesToTheHandler) {
  auto s = serve();
  EXPECT_EQ(call(path, "reload /etc/tprosshy/new config.yaml", 10s),
            (reply{78, "/etc/tprosshy/new config.yaml:1:1: no\n"}));
  io.on_io([&] { EXPECT_EQ(reloads, std::vector<std::string>{"/etc/tprosshy/new config.yaml"}); });
}

TEST_F(ControlServer, AnswersStatusWhileAReloadRuns) {
  auto timer = io.make<asio::steady_timer>(io.executor(), asio::steady_timer::time_point::max());
  std::promise<void> entered;
  h.reload = [&](std::string config) -> asio::awaitable<reply> {
    entered.set_value();
    co_await timer->async_wait(asio::as_tuple(asio::use_awaitable));
    co_return reply{0, "applied " + config + "\n"};
  };
  auto s = serve();
  auto reload = std::async(std::launch::async, [&] { return call(path, "reload /c.yaml", 30s); });
  ASSERT_EQ(entered.get_future().wait_for(10s), std::future_status::ready);
  EXPECT_EQ(call(path, "status json", 10s).code, 0);
  EXPECT_EQ(reload.wait_for(0s), std::future_status::timeout);  // still waiting for it
  io.on_io([&] { timer->cancel(); });
  ASSERT_EQ(reload.wait_for(20s), std::future_status::ready);
  EXPECT_EQ(reload.get(), (reply{0, "applied /c.yaml\n"}));
}

TEST_F(ControlServer, HandlerErrorsBecome70) {
  h.reload = [](std::string) -> asio::awaitable<reply> {
    throw std::runtime_error("runtime gone");
    co_return reply{};
  };
  auto s = serve();
  EXPECT_EQ(call(path, "reload /c.yaml", 10s), (reply{70, "runtime gone\n"}));
  EXPECT_EQ(call(path, "status", 10s).code, 0);  // the server goes on
}

TEST_F(ControlServer, RefusesBadRequests) {
  auto s = serve();
  for (const std::string bad : {"bogus", "reload relative.yaml", "reload", "status xml"}) {
    auto r = call(path, bad, 10s);
    EXPECT_EQ(r.code, 64) << bad;
    EXPECT_FALSE(r.text.empty()) << bad;
  }
  io.on_io([&] { EXPECT_TRUE(reloads.empty()); });
}

TEST_F(ControlServer, BoundsTheRequestLine) {
  auto s = serve();
  const auto longest = "reload /" + std::string(max_request - 8, 'a');
  EXPECT_EQ(call(path, longest, 10s).code, 78);  // reached the handler
  const auto over = call(path, longest + "a", 10s);
  EXPECT_EQ(over, (reply{64, "request longer than 4096 bytes\n"}));
  // Far more than the socket buffers hold: the server answers without reading it all.
  EXPECT_EQ(call(path, std::string(4 << 20, 'x'), 10s).code, 64);
  io.on_io([&] { EXPECT_EQ(reloads.size(), 1u); });
}

TEST_F(ControlServer, DropsASilentClient) {
  server_limits quick;
  quick.request_time = 300ms;
  auto s = serve(quick);
  const int fd = connect_to(path);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(read_to_end(fd), "");  // closed, no reply
  ::close(fd);
  // A slow client that makes it in time is answered.
  const int slow = connect_to(path);
  ASSERT_GE(slow, 0);
  ASSERT_EQ(::write(slow, "sta", 3), 3);
  std::this_thread::sleep_for(50ms);
  ASSERT_EQ(::write(slow, "tus json\n", 9), 9);
  EXPECT_EQ(decode(read_to_end(slow)), (reply{0, render_json(sample())}));
  ::close(slow);
}

TEST_F(ControlServer, AcceptsALastLineWithoutNewline) {
  auto s = serve();
  const int fd = connect_to(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, "status json", 11), 11);
  ::shutdown(fd, SHUT_WR);
  EXPECT_EQ(decode(read_to_end(fd)).code, 0);
  ::close(fd);
}

TEST_F(ControlServer, TooManyAtOnceAreTold75) {
  server_limits two;
  two.sessions = 2;
  two.request_time = 30s;
  auto s = serve(two);
  const int a = connect_to(path), b = connect_to(path);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  EXPECT_EQ(call(path, "status", 10s).code, 75);
  ::close(a);
  ::close(b);
  // Their sessions end when the server sees them go; that takes a moment, never long.
  int code = -1;
  for (int i = 0; i < 200 && code != 0; ++i) {
    code = call(path, "status", 10s).code;
    if (code) std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(code, 0);
}

TEST_F(ControlServer, ManyClientsAtOnce) {
  auto s = serve();
  const auto want = reply{0, render_json(sample())};
  std::atomic<int> good = 0;
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t)
    clients.emplace_back([&] {
      for (int i = 0; i < 25; ++i)
        if (call(path, "status json", 20s) == want) ++good;
    });
  for (auto& c : clients) c.join();
  EXPECT_EQ(good, 200);
}

TEST_F(ControlServer, ReplacesAStaleSocket) {
  make_stale(path);
  EXPECT_THROW(call(path, "status", 10s), not_running);
  auto s = serve();
  EXPECT_EQ(call(path, "status", 10s).code, 0);
}

TEST_F(ControlServer, NeverStealsALiveOne) {
  auto first = serve();
  EXPECT_EQ(error_of([&] { io.make<server>(io.executor(), path, h); }), EADDRINUSE);
  EXPECT_EQ(call(path, "status", 10s).code, 0);  // the first one still answers
}

TEST_F(ControlServer, RefusesASymbolicLink) {
  fs::create_directory(dir / "elsewhere");
  fs::create_symlink(dir / "elsewhere" / "sock", path);
  EXPECT_EQ(error_of([&] { serve(); }), ELOOP);
  EXPECT_TRUE(fs::is_symlink(path));
  EXPECT_FALSE(fs::exists(dir / "elsewhere" / "sock"));
  // A stale socket behind the link is not followed either.
  make_stale(dir / "elsewhere" / "sock");
  EXPECT_EQ(error_of([&] { serve(); }), ELOOP);
}

TEST_F(ControlServer, RefusesAnotherUsersSocket) {
  make_stale(path);
  ASSERT_EQ(::chown(path.c_str(), 65534, 65534), 0);
  EXPECT_EQ(error_of([&] { serve(); }), EPERM);
  EXPECT_TRUE(fs::is_socket(path));
}

TEST_F(ControlServer, RefusesAFileThatIsNoSocket) {
  { std::ofstream(path) << "precious\n"; }
  EXPECT_EQ(error_of([&] { serve(); }), EEXIST);
  EXPECT_TRUE(fs::is_regular_file(path));
}

TEST_F(ControlServer, RefusesADirectoryOthersMayWrite) {
  fs::permissions(dir, fs::perms::all);  // 0777
  EXPECT_EQ(error_of([&] { serve(); }), EPERM);
  fs::permissions(dir, fs::perms::all | fs::perms::sticky_bit);  // like /tmp
  auto s = serve();
  EXPECT_EQ(call(path, "status", 10s).code, 0);
}

TEST_F(ControlServer, RefusesAnotherUsersDirectory) {
  ASSERT_EQ(::chown(dir.c_str(), 65534, 65534), 0);
  EXPECT_EQ(error_of([&] { serve(); }), EPERM);
}

TEST_F(ControlServer, StopRemovesTheSocketAndDropsClients) {
  server_limits slow;
  slow.request_time = 60s;
  auto s = serve(slow);
  const int waiting = connect_to(path);
  ASSERT_GE(waiting, 0);
  EXPECT_EQ(call(path, "status", 10s).code, 0);  // the waiting one has been accepted
  io.on_io([&] { s->stop(); });
  EXPECT_EQ(read_to_end(waiting), "");  // well before its 60 s
  ::close(waiting);
  EXPECT_FALSE(fs::exists(path));
  EXPECT_THROW(call(path, "status", 10s), not_running);
}

TEST_F(ControlServer, LeavesASuccessorsSocket) {
  auto old = serve();
  fs::remove(path);
  auto next = serve();
  old.reset();
  EXPECT_TRUE(fs::is_socket(path));
  EXPECT_EQ(call(path, "status", 10s).code, 0);
}

TEST_F(ControlServer, ClientErrors) {
  EXPECT_THROW(call(path, "status", 10s), not_running);  // no file
  EXPECT_THROW(call(dir / "no" / "such" / "dir", "status", 10s), not_running);
  { std::ofstream(dir / "plain") << "x"; }
  EXPECT_THROW(call(dir / "plain", "status", 10s), not_running);  // not a socket
  try {
    call(path, "status", 1s);
    ADD_FAILURE() << "no exception";
  } catch (const not_running& e) {
    EXPECT_NE(std::string(e.what()).find("no tprosshy is running on " + path.string()),
              std::string::npos)
        << e.what();
  }
  // Something listens but never answers: the client gives up at its deadline.
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  EXPECT_EQ(error_of([&] { call(path, "status", 300ms); }), ETIMEDOUT);
  ::close(fd);
}

// Another user meets the socket's permissions: a distinct error, not "not running".
TEST_F(ControlServer, AnotherUserIsNotPermitted) {
  auto s = serve();
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(10);
    try {
      call(path, "status", 5s);
      ::_exit(11);
    } catch (const not_running&) {
      ::_exit(12);
    } catch (const std::system_error& e) {
      ::_exit(e.code().value() == EACCES ? 0 : 13);
    }
    ::_exit(14);
  }
  int st = 0;
  for (int i = 0; i < 200 && ::waitpid(pid, &st, WNOHANG) == 0; ++i)
    std::this_thread::sleep_for(50ms);
  if (::waitpid(pid, &st, WNOHANG) == 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &st, 0);
    FAIL() << "the child did not finish";
  }
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 0);
}

}  // namespace
}  // namespace tprosshy::control
