// `tprosshy helper` (the built binary) in this binary's own network namespace, with root
// and uid 65534 callers (forked children) as the daemon would be, and forged requests as a
// hostile user would send them.
#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <string>
#include <thread>

#include "../unit/nft_samples.hpp"
#include "helper/client.hpp"
#include "helper/protocol.hpp"
#include "helper/server.hpp"

namespace tprosshy::helper {
namespace {

namespace samples = nft::samples;
using namespace std::chrono_literals;

constexpr uid_t nobody = 65534;

std::string run(const std::string& cmd) {
  std::string out;
  FILE* f = ::popen(("(" + cmd + ") 2>&1").c_str(), "r");
  if (!f) return out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, f)) > 0;) out.append(buf, n);
  ::pclose(f);
  return out;
}

bool table_exists(const std::string& t) {
  return run("nft list tables").find("table inet " + t + "\n") != std::string::npos;
}

// Polls for up to 3 s.
bool gone_soon(const std::string& t) {
  for (int i = 0; i < 30; ++i) {
    if (!table_exists(t)) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

uint16_t listen_tcp(const net::unique_fd& fd, const char* addr = "127.0.0.1") {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  ::inet_pton(AF_INET, addr, &a.sin_addr);
  socklen_t len = sizeof a;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), len) != 0 || ::listen(fd.get(), 4) != 0)
    return 0;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

uint32_t mark_of(int fd) {
  uint32_t m = 0;
  socklen_t len = sizeof m;
  return ::getsockopt(fd, SOL_SOCKET, SO_MARK, &m, &len) == 0 ? m : ~0u;
}

nft::ruleset routes(uint16_t tcp_port) {
  nft::ruleset r;
  r.tcp_port = tcp_port;
  r.profiles.push_back(
      {"lab", {samples::cidr("198.18.99.0/24")}, {samples::cidr("fd00:99::/64")}, true});
  return r;
}

// What an attempt threw: "errno: what", or "ok".
std::string outcome(const std::function<void()>& f) {
  try {
    f();
    return "ok";
  } catch (const std::system_error& e) {
    return std::to_string(e.code().value()) + ": " + e.what();
  }
}

// A child process running as `uid` (gid too). It reports to the parent with hold(), which
// then keeps the child (and whatever its connections hold) alive until end().
class as_user {
 public:
  using hold = std::function<void(const std::string&)>;
  as_user(uid_t uid, std::function<std::string(const hold&)> f) {
    int r[2], g[2];
    if (::pipe(r) != 0 || ::pipe(g) != 0) throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(r[0]);
      ::close(g[1]);
      bool held = false;
      auto report = [&](const std::string& s) {
        (void)::write(r[1], s.data(), s.size());
        ::close(r[1]);
        held = true;
        char b;
        (void)::read(g[0], &b, 1);  // until the parent lets go
      };
      std::string out;
      if (::setgroups(0, nullptr) != 0 || ::setresgid(uid, uid, uid) != 0 ||
          ::setresuid(uid, uid, uid) != 0) {
        out = "setresuid failed";
      } else {
        try {
          out = f(report);
        } catch (const std::exception& e) {
          out = std::string("threw: ") + e.what();
        }
      }
      if (!held) (void)::write(r[1], out.data(), out.size());
      ::_exit(0);
    }
    ::close(r[1]);
    ::close(g[0]);
    result_fd_ = r[0];
    go_fd_ = g[1];
  }
  ~as_user() { end(); }

  // What the child reported (waits for it).
  std::string result() {
    if (result_fd_ >= 0) {
      char buf[4096];
      for (ssize_t n; (n = ::read(result_fd_, buf, sizeof buf)) > 0;) result_.append(buf, n);
      ::close(result_fd_);
      result_fd_ = -1;
    }
    return result_;
  }
  void end() {
    result();
    if (go_fd_ >= 0) ::close(go_fd_);
    go_fd_ = -1;
    if (pid_ > 0) ::waitpid(pid_, nullptr, 0);
    pid_ = 0;
  }

 private:
  pid_t pid_ = 0;
  int result_fd_ = -1, go_fd_ = -1;
  std::string result_;
};

// --- a caller that does not play by the rules -------------------------------------------

net::unique_fd raw_connect(const std::string& path) {
  net::unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return {};
  timeval t{10, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &t, sizeof t);
  return fd;
}

void raw_send(int fd, const std::vector<uint8_t>& bytes, int with_fd = -1) {
  iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  if (with_fd >= 0) {
    m.msg_control = ctl;
    m.msg_controllen = sizeof ctl;
    auto* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &with_fd, sizeof with_fd);
  }
  (void)::sendmsg(fd, &m, MSG_NOSIGNAL);
}

// The next reply: "ok", "error N: message", or "closed".
std::string raw_reply(int fd) {
  std::vector<uint8_t> b(4);
  auto read_all = [&](size_t from) {
    for (size_t at = from; at < b.size();) {
      auto n = ::recv(fd, b.data() + at, b.size() - at, 0);
      if (n <= 0) return false;
      at += n;
    }
    return true;
  };
  if (!read_all(0)) return "closed";
  b.resize(4 + frame_length(std::span<const uint8_t, 4>(b.data(), 4)));
  if (!read_all(4)) return "closed";
  auto r = decode_reply(std::span<const uint8_t>(b).subspan(4));
  if (auto* e = std::get_if<error>(&r))
    return "error " + std::to_string(e->code) + ": " + e->message;
  return "ok";
}

std::string raw_hello(int fd, int ns_fd) {
  raw_send(fd, encode(hello{}), ns_fd);
  return raw_reply(fd);
}

class helper_server : public testing::Test {
 protected:
  void SetUp() override {
    run("nft flush ruleset");
    dir_ = "/tmp/tprosshy-helper-test-" + std::to_string(::getpid());
    std::filesystem::remove_all(dir_);
    ASSERT_EQ(::mkdir(dir_.c_str(), 0755), 0);
    path_ = dir_ + "/helper.sock";
    pid_ = ::fork();
    if (pid_ == 0) {
      ::execl(TPROSSHY_BIN, "tprosshy", "helper", "--socket", path_.c_str(), nullptr);
      ::_exit(127);
    }
    for (int i = 0; i < 100 && !raw_connect(path_); ++i) std::this_thread::sleep_for(50ms);
    ASSERT_TRUE(raw_connect(path_)) << "the helper did not come up";
    struct stat st {};
    ASSERT_EQ(::stat(path_.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);         // no group tprosshy here
    ASSERT_EQ(::chmod(path_.c_str(), 0666), 0);  // for the uid 65534 callers of the tests
  }
  void TearDown() override {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      ::waitpid(pid_, &status, 0);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
      EXPECT_FALSE(std::filesystem::exists(path_)) << "the helper left its socket behind";
    }
    std::filesystem::remove_all(dir_);
    run("nft flush ruleset");
  }
  std::string dir_, path_;
  pid_t pid_ = 0;
};

TEST_F(helper_server, root_installs_table_tprosshy_which_goes_with_the_connection) {
  {
    auto c = client::connect(path_);
    c.install(samples::two_profiles());
    ASSERT_TRUE(table_exists("tprosshy"));
    auto text = run("nft list table inet tprosshy");
    EXPECT_NE(text.find("flags owner"), std::string::npos) << text;
    EXPECT_NE(text.find("meta mark 0x00007470 return"), std::string::npos) << text;
    EXPECT_EQ(text.find("skuid"), std::string::npos) << text;
    auto s = c.marked_socket(AF_INET, SOCK_STREAM);
    EXPECT_EQ(mark_of(s.get()), 0x7470u);
    auto u = c.marked_socket(AF_INET6, SOCK_DGRAM);
    EXPECT_EQ(mark_of(u.get()), 0x7470u);
    int type = 0;
    socklen_t len = sizeof type;
    ::getsockopt(u.get(), SOL_SOCKET, SO_TYPE, &type, &len);
    EXPECT_EQ(type, SOCK_DGRAM);
    EXPECT_EQ(::fcntl(u.get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    c.learn("corp", samples::ip("198.18.50.1"), 300s);
    EXPECT_NE(run("nft list set inet tprosshy learn4_corp").find("198.18.50.1"), std::string::npos);
    EXPECT_NE(outcome([&] {
                c.learn("lab-2", samples::ip("198.18.50.2"), 60s);
              }).find("2: learn: profile 'lab-2' has no learned sets"),
              std::string::npos);
    c.remove();
    EXPECT_FALSE(table_exists("tprosshy"));
    c.install(samples::local_one_profile());
    EXPECT_TRUE(table_exists("tprosshy"));
  }
  EXPECT_TRUE(gone_soon("tprosshy"));
}

TEST_F(helper_server, a_user_gets_a_table_confined_to_its_uid) {
  as_user u(nobody, [&](const as_user::hold& hold) {
    net::unique_fd l(::socket(AF_INET, SOCK_STREAM, 0));
    auto c = client::connect(path_);
    auto r = routes(listen_tcp(l));
    r.mark = 0;            // forged: the helper picks the mark
    r.table = "tprosshy";  // and the table
    r.skuid = 0;           // and the uid
    c.install(r);
    auto s = c.marked_socket(AF_INET, SOCK_DGRAM);
    hold("mark " + std::to_string(mark_of(s.get())));
    return "";
  });
  EXPECT_EQ(u.result(), "mark " + std::to_string(0x7471));
  ASSERT_TRUE(table_exists("tprosshy_u65534")) << run("nft list tables");
  EXPECT_FALSE(table_exists("tprosshy"));
  auto text = run("nft list table inet tprosshy_u65534");
  EXPECT_NE(text.find("meta mark 0x00007471 return"), std::string::npos) << text;
  std::regex confined(
      "meta skuid (65534|\"nobody\") ip6? daddr @(route|learn)[46]_lab meta "
      "l4proto tcp redirect to :");
  EXPECT_EQ(std::distance(std::sregex_iterator(text.begin(), text.end(), confined),
                          std::sregex_iterator()),
            4)
      << text;
  u.end();
  EXPECT_TRUE(gone_soon("tprosshy_u65534"));
}

TEST_F(helper_server, forged_requests_of_a_user_are_refused_and_install_nothing) {
  net::unique_fd roots(::socket(AF_INET, SOCK_STREAM, 0));
  const auto root_port = listen_tcp(roots);
  // A network namespace of another: a child that made one and waits.
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t other = ::fork();
  if (other == 0) {
    char b = ::unshare(CLONE_NEWNET) == 0 ? 'y' : 'n';
    (void)::write(ready[1], &b, 1);
    ::pause();
    ::_exit(0);
  }
  char b = 0;
  ASSERT_EQ(::read(ready[0], &b, 1), 1);
  ASSERT_EQ(b, 'y');
  net::unique_fd other_ns(::open(("/proc/" + std::to_string(other) + "/ns/net").c_str(), O_RDONLY));
  ASSERT_TRUE(other_ns);

  as_user u(nobody, [&](const as_user::hold&) {
    std::string out;
    auto say = [&](const std::string& name, const std::string& what) {
      out += name + " -> " + what + "\n";
    };
    net::unique_fd l(::socket(AF_INET, SOCK_STREAM, 0));
    const auto mine = listen_tcp(l);
    {
      auto c = client::connect(path_);
      auto gw = routes(mine);
      gw.interfaces = {"lo"};
      say("gateway", outcome([&] { c.install(gw); }));
      say("root's port", outcome([&] { c.install(routes(root_port)); }));
      auto excl = routes(mine);
      excl.exclude.assign(1000000, samples::pfx("10.0.0.0/8"));
      say("10^6 excludes", outcome([&] { c.install(excl); }));
    }
    {
      auto c = client::connect(path_);
      auto big = routes(mine);
      big.profiles[0].v4.assign(1000000, samples::cidr("10.0.0.0/8"));
      say("10^6 ranges", outcome([&] { c.install(big); }));
      say("then", outcome([&] { c.remove(); }));
    }
    net::unique_fd self(::open("/proc/self/ns/net", O_RDONLY));
    {
      auto fd = raw_connect(path_);
      say("hello", raw_hello(fd.get(), self.get()));
      auto f = encode(install{routes(mine)});
      f.resize(f.size() - 10);
      f[3] = static_cast<uint8_t>(f[3] - 10);  // a frame of its own, holding a short ruleset
      raw_send(fd.get(), f);
      say("truncated", raw_reply(fd.get()));
      say("then", raw_reply(fd.get()));
    }
    {
      auto fd = raw_connect(path_);
      say("hello", raw_hello(fd.get(), self.get()));
      std::string g = "GET / HTTP/1.1\r\n\r\n";
      raw_send(fd.get(), std::vector<uint8_t>(g.begin(), g.end()));
      say("garbage", raw_reply(fd.get()));
      say("then", raw_reply(fd.get()));
    }
    {
      auto fd = raw_connect(path_);
      raw_send(fd.get(), encode(install{routes(mine)}));
      say("no hello", raw_reply(fd.get()));
    }
    {
      auto fd = raw_connect(path_);
      raw_send(fd.get(), encode(hello{}));
      say("hello without a namespace", raw_reply(fd.get()));
    }
    {
      auto fd = raw_connect(path_);
      say("other namespace", raw_hello(fd.get(), other_ns.get()));
      raw_send(fd.get(), encode(install{routes(mine)}));
      say("then", raw_reply(fd.get()));
    }
    return out;
  });
  auto got = u.result();
  ::kill(other, SIGKILL);
  ::waitpid(other, nullptr, 0);
  auto p = std::to_string(root_port);
  for (const std::string& want : std::vector<std::string>{
           "gateway -> 1: install: interfaces: gateway mode needs a root daemon (uid 65534)",
           "root's port -> 1: install: tcp_port " + p + ": a TCP listener of uid 0 holds it",
           "10^6 excludes -> 22: install: exclude: 1000000 prefixes, limit 65536",
           "10^6 ranges -> 71: frame: 10000",  // and the connection is closed:
           "bytes, limit 8388608: Protocol error\nthen -> 104: helper: the helper is gone",
           "truncated -> error 22: install: ", "truncated at byte",
           "garbage -> error 71: frame: 1195725856 bytes, limit 8388608\nthen -> closed",
           "no hello -> error 71: the first message must be hello",
           "hello without a namespace -> error 71: hello must carry the caller's /proc/self/ns/net "
           "(0 descriptors came)",
           "other namespace -> error 18: the caller is in another network namespace\nthen -> "
           "closed"})
    EXPECT_NE(got.find(want), std::string::npos) << want << "\n--- got:\n" << got;
  EXPECT_EQ(run("nft list tables"), "");
}

TEST_F(helper_server, one_table_per_name_two_uids_two_tables) {
  auto root = client::connect(path_);
  root.install(samples::local_one_profile());
  auto second = client::connect(path_);
  auto busy = outcome([&] { second.install(samples::two_profiles()); });
  EXPECT_TRUE(
      busy.starts_with("16: table inet tprosshy is held by another tprosshy of uid 0 (pid " +
                       std::to_string(::getpid()) + ")"))
      << busy;
  auto text = run("nft list table inet tprosshy");
  EXPECT_EQ(text.find("corp ssh server"), std::string::npos) << "the first lost its table";

  as_user u(nobody, [&](const as_user::hold& hold) {
    net::unique_fd l(::socket(AF_INET, SOCK_STREAM, 0));
    auto r = routes(listen_tcp(l));
    auto a = client::connect(path_), b = client::connect(path_);
    a.install(r);
    auto again = outcome([&] { b.install(r); });
    hold(again);
    return "";
  });
  auto again = u.result();
  EXPECT_NE(again.find("16: table inet tprosshy_u65534 is held by another tprosshy of uid 65534 "
                       "(pid "),
            std::string::npos)
      << again;
  EXPECT_TRUE(table_exists("tprosshy"));
  EXPECT_TRUE(table_exists("tprosshy_u65534"));
  u.end();
  EXPECT_TRUE(gone_soon("tprosshy_u65534"));
  EXPECT_TRUE(table_exists("tprosshy"));
  // Once the holder is gone, the name is free.
  root = client::connect(path_);
  EXPECT_TRUE(gone_soon("tprosshy"));
  second.install(samples::two_profiles());
  EXPECT_TRUE(table_exists("tprosshy"));
}

TEST_F(helper_server, connections_are_bounded_in_all_and_per_user) {
  as_user u(nobody, [&](const as_user::hold& hold) {
    std::vector<net::unique_fd> open;
    for (size_t i = 0; i < limits::user_connections; ++i) open.push_back(raw_connect(path_));
    auto extra = raw_connect(path_);
    hold(raw_reply(extra.get()));
    return "";
  });
  EXPECT_EQ(u.result(), "error 11: uid 65534 has 8 connections to the helper already");
  u.end();
  std::vector<net::unique_fd> open;
  for (size_t i = 0; i < limits::connections; ++i) open.push_back(raw_connect(path_));
  auto extra = raw_connect(path_);
  EXPECT_EQ(raw_reply(extra.get()), "error 11: the helper serves 64 connections already");
  open.clear();
  // Their slots come back.
  for (int i = 0; i < 20; ++i) {
    try {
      client::connect(path_);
      break;
    } catch (const std::system_error&) {
      std::this_thread::sleep_for(50ms);
    }
  }
  EXPECT_EQ(outcome([&] { client::connect(path_).install(samples::local_one_profile()); }), "ok");
}

TEST_F(helper_server, a_users_learned_addresses_are_bounded) {
  as_user u(nobody, [&](const as_user::hold&) {
    net::unique_fd l(::socket(AF_INET, SOCK_STREAM, 0));
    auto c = client::connect(path_);
    c.install(routes(listen_tcp(l)));
    auto start = std::chrono::steady_clock::now();
    for (uint32_t i = 0; i < limits::live_learned; ++i)
      c.learn("lab", net::from_u128(net::to_u128(samples::ip("10.0.0.0")) + i, true), 600s);
    auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
    // Learning one already learned refreshes it; a new one is refused.
    c.learn("lab", samples::ip("10.0.0.7"), 900s);
    return outcome([&] { c.learn("lab", samples::ip("10.9.0.0"), 600s); }) + " (" +
           std::to_string(took.count()) + " ms)";
  });
  auto got = u.result();
  EXPECT_TRUE(got.starts_with("28: learn: 65536 learned addresses alive, limit 65536")) << got;
}

TEST_F(helper_server, a_silent_connection_is_closed_after_the_hello_deadline) {
  auto fd = raw_connect(path_);
  ASSERT_TRUE(fd);
  auto start = std::chrono::steady_clock::now();
  pollfd p{fd.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 15000), 1);
  char b;
  EXPECT_EQ(::recv(fd.get(), &b, 1, 0), 0);
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GT(took, 4s);
  EXPECT_LT(took, 12s);  // 5 s, and room for a busy machine
}

TEST(helper_process, refuses_to_run_as_a_user) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::setresgid(nobody, nobody, nobody) != 0 || ::setresuid(nobody, nobody, nobody) != 0)
      ::_exit(2);
    ::execl(TPROSSHY_BIN, "tprosshy", "helper", "--socket", "/tmp/never-made.sock", nullptr);
    ::_exit(127);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 77);
  EXPECT_FALSE(std::filesystem::exists("/tmp/never-made.sock"));
}

TEST(helper_process, stdio_needs_a_unix_socket) {
  EXPECT_NE(run(std::string(TPROSSHY_BIN) + " helper --stdio < /dev/null; echo \"rc=$?\"")
                .find("needs a connected Unix stream socket on fd 0\nrc=64"),
            std::string::npos);
  EXPECT_NE(run(std::string(TPROSSHY_BIN) + " helper --socket; echo \"rc=$?\"").find("rc=64"),
            std::string::npos);
}

// `tprosshy helper` with the given argv tail, in a child; returns its pid.
pid_t start_helper(std::vector<std::string> args, int listener = -1) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (listener >= 0) {  // as systemd passes a socket unit's socket
      ::dup2(listener, 3);
      ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
      ::setenv("LISTEN_FDS", "1", 1);
    }
    std::vector<char*> argv{const_cast<char*>("tprosshy"), const_cast<char*>("helper")};
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(TPROSSHY_BIN, argv.data());
    ::_exit(127);
  }
  return pid;
}

int stop_helper(pid_t pid, int sig = SIGTERM) {
  if (sig) ::kill(pid, sig);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(helper_process, takes_the_socket_systemd_passes) {
  run("nft flush ruleset");
  const std::string path = "/tmp/tprosshy-helper-activated-" + std::to_string(::getpid());
  ::unlink(path.c_str());
  net::unique_fd l(::socket(AF_UNIX, SOCK_STREAM, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  ASSERT_EQ(::bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(l.get(), 4), 0);
  auto pid = start_helper({}, l.get());
  l.reset();
  {
    auto c = client::connect(path);  // the backlog holds it until the helper accepts
    c.install(samples::local_one_profile());
    EXPECT_TRUE(table_exists("tprosshy"));
  }
  EXPECT_TRUE(gone_soon("tprosshy"));
  EXPECT_EQ(stop_helper(pid), 0);
  ::unlink(path.c_str());
}

TEST(helper_process, replaces_a_stale_socket_but_not_a_live_helper) {
  const std::string path = "/tmp/tprosshy-helper-stale-" + std::to_string(::getpid());
  ::unlink(path.c_str());
  {
    net::unique_fd dead(::socket(AF_UNIX, SOCK_STREAM, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    ASSERT_EQ(::bind(dead.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  }  // closed: nobody answers there
  auto pid = start_helper({"--socket", path});
  bool up = false;
  for (int i = 0; i < 100 && !up; ++i) {
    up = outcome([&] { client::connect(path); }) == "ok";
    if (!up) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(up);
  // A second helper on the same path refuses to start and leaves the first alone.
  EXPECT_EQ(stop_helper(start_helper({"--socket", path}), 0), 71);
  EXPECT_EQ(outcome([&] { client::connect(path); }), "ok");
  EXPECT_EQ(stop_helper(pid), 0);
  EXPECT_FALSE(std::filesystem::exists(path));
  // Anything but a socket is left alone.
  { std::ofstream(path) << "not a socket"; }
  EXPECT_EQ(stop_helper(start_helper({"--socket", path}), 0), 71);
  EXPECT_TRUE(std::filesystem::exists(path));
  ::unlink(path.c_str());
}

TEST(helper_process, spawned_helper_serves_its_daemon_and_ends_with_it) {
  run("nft flush ruleset");
  pid_t pid = 0;
  const std::string marker = "/tmp/tprosshy-helper-marker-" + std::to_string(::getpid());
  net::unique_fd inherited(::open(marker.c_str(), O_CREAT | O_RDWR, 0600));
  ::unlink(marker.c_str());
  {
    auto c = client::spawn(TPROSSHY_BIN);
    pid = c.pid();
    ASSERT_GT(pid, 0);
    c.install(samples::two_profiles());
    EXPECT_TRUE(table_exists("tprosshy"));
    EXPECT_EQ(mark_of(c.marked_socket(AF_INET, SOCK_STREAM).get()), 0x7470u);
    // It keeps no descriptor of ours beyond its connection (the marker lacks CLOEXEC).
    auto fds = run("ls -l /proc/" + std::to_string(pid) + "/fd");
    EXPECT_EQ(fds.find(marker), std::string::npos) << fds;
    // Ctrl-C reaches the whole process group; the daemon, not the helper, acts on it.
    ::kill(pid, SIGINT);
    std::this_thread::sleep_for(200ms);
    EXPECT_TRUE(table_exists("tprosshy"));
  }
  EXPECT_TRUE(gone_soon("tprosshy"));
  EXPECT_NE(::kill(pid, 0), 0) << "the helper outlived its connection";  // reaped by ~client

  // A user's own spawned helper cannot work; it says why.
  as_user u(nobody,
            [](const as_user::hold&) { return outcome([] { client::spawn(TPROSSHY_BIN); }); });
  EXPECT_EQ(u.result(),
            "104: helper: the helper exited with code 77 (it must run as root): Connection reset "
            "by peer");
}

}  // namespace
}  // namespace tprosshy::helper
