// The /metrics endpoint against a real HTTP client (curl) and raw sockets, in the test's
// own network namespace: the answers and their headers, keep-alive, bounds, deadlines,
// stalled and concurrent clients.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "control/metrics.hpp"
#include "io_thread.hpp"

namespace tprosshy::control {
namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using tcp = asio::ip::tcp;
using tprosshy::testing::io_thread;

struct result {
  int status = -1;
  std::string out;
};

// A shell command's exit status and standard output.
result sh(const std::string& cmd) {
  result r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char b[65536];
  for (std::size_t n; (n = std::fread(b, 1, sizeof b, p)) > 0;) r.out.append(b, n);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

const std::string curl = "curl -sS --max-time 20 ";

// rcvbuf: a small receive window, set before the handshake so that it holds.
int connect_to(const tcp::endpoint& ep, int rcvbuf = 0) {
  const int fd = ::socket(ep.address().is_v6() ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (rcvbuf) ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  if (::connect(fd, ep.data(), static_cast<socklen_t>(ep.size())) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

void send_all(int fd, std::string_view s) {
  while (!s.empty()) {
    const auto n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
    if (n <= 0) return;
    s.remove_prefix(static_cast<std::size_t>(n));
  }
}

// Reads until `done(got)` or the peer closes; throws after `limit`.
template <class Done>
std::string read_until(int fd, Done done, std::chrono::milliseconds limit = 10s) {
  std::string got;
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!done(got)) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (left <= 0ms) throw std::runtime_error("no answer in time; got: " + got.substr(0, 200));
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char b[65536];
    const auto n = ::read(fd, b, sizeof b);
    if (n <= 0) break;
    got.append(b, static_cast<std::size_t>(n));
  }
  return got;
}

std::string read_to_end(int fd, std::chrono::milliseconds limit = 10s) {
  return read_until(
      fd, [](const std::string&) { return false; }, limit);
}

// One whole response with a Content-Length, and nothing after it.
std::string read_response(int fd) {
  return read_until(fd, [](const std::string& got) {
    const auto end = got.find("\r\n\r\n");
    if (end == std::string::npos) return false;
    const auto cl = got.find("Content-Length: ");
    if (cl == std::string::npos || cl > end) return true;
    return got.size() >= end + 4 + std::stoul(got.substr(cl + 16));
  });
}

class Metrics : public ::testing::Test {
 protected:
  std::shared_ptr<metrics_server> serve(metrics_limits limits = {},
                                        tcp::endpoint at = {asio::ip::make_address("127.0.0.1"),
                                                            0}) {
    auto m = io.make<metrics_server>(
        io.executor(), at, [this] { return body(); }, limits);
    io.on_io([&] { m->start(); });
    return m;
  }
  std::string url(const std::shared_ptr<metrics_server>& m, std::string_view path = "/metrics") {
    const auto ep = m->local_endpoint();
    const auto host =
        ep.address().is_v6() ? "[" + ep.address().to_string() + "]" : ep.address().to_string();
    return "'http://" + host + ":" + std::to_string(ep.port()) + std::string(path) + "'";
  }

  std::string body() {
    ++calls;
    if (fail) throw std::runtime_error("no status");
    return text;
  }

  io_thread io;
  std::atomic<int> calls = 0;
  std::atomic<bool> fail = false;
  std::string text = "# HELP tprosshy_x X.\n# TYPE tprosshy_x gauge\ntprosshy_x 1\n";
};

TEST_F(Metrics, ServesTheTextWithItsContentType) {
  auto m = serve();
  const auto r = sh(curl + "-i " + url(m));
  ASSERT_EQ(r.status, 0) << r.out;
  const auto split = r.out.find("\r\n\r\n");
  ASSERT_NE(split, std::string::npos) << r.out;
  const auto head = r.out.substr(0, split + 2), got = r.out.substr(split + 4);
  EXPECT_TRUE(head.starts_with("HTTP/1.1 200 OK\r\n")) << head;
  EXPECT_NE(head.find("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            std::string::npos)
      << head;
  EXPECT_NE(head.find("\r\nContent-Length: " + std::to_string(text.size()) + "\r\n"),
            std::string::npos)
      << head;
  EXPECT_EQ(got, text);
  EXPECT_EQ(sh(curl + "-o /dev/null -w '%{http_code}' " + url(m, "/metrics?x=1")).out, "200");
}

TEST_F(Metrics, OtherPathsAndMethods) {
  auto m = serve();
  auto code = [&](const std::string& args) {
    return sh(curl + "-o /dev/null -w '%{http_code}' " + args).out;
  };
  EXPECT_EQ(code(url(m, "/")), "404");
  EXPECT_EQ(code(url(m, "/metricsx")), "404");
  EXPECT_EQ(code(url(m, "/metrics/")), "404");
  EXPECT_EQ(code("-X POST " + url(m)), "405");
  EXPECT_EQ(code("-X DELETE " + url(m)), "405");
  EXPECT_EQ(code("-X POST " + url(m, "/other")), "404");
  const auto post = sh(curl + "-i -X PUT " + url(m)).out;
  EXPECT_NE(post.find("\r\nAllow: GET, HEAD\r\n"), std::string::npos) << post;
  // HEAD: the GET's headers, no body.
  const auto head = sh(curl + "-I " + url(m));
  ASSERT_EQ(head.status, 0);
  EXPECT_TRUE(head.out.starts_with("HTTP/1.1 200 OK\r\n")) << head.out;
  EXPECT_NE(head.out.find("\r\nContent-Length: " + std::to_string(text.size()) + "\r\n"),
            std::string::npos)
      << head.out;
  EXPECT_TRUE(head.out.ends_with("\r\n\r\n")) << head.out;
}

TEST_F(Metrics, KeepsTheConnectionAlive) {
  auto m = serve();
  const auto r = sh(curl + "-o /dev/null -o /dev/null -o /dev/null -w '%{num_connects} ' " +
                    url(m) + " " + url(m) + " " + url(m, "/nothing"));
  EXPECT_EQ(r.out, "1 0 0 ");  // one connection, three requests, a 404 included
  EXPECT_EQ(calls, 2);
}

TEST_F(Metrics, Http10ClosesAfterTheAnswer) {
  auto m = serve();
  const int fd = connect_to(m->local_endpoint());
  ASSERT_GE(fd, 0);
  send_all(fd, "GET /metrics HTTP/1.0\r\n\r\n");
  const auto got = read_to_end(fd);
  EXPECT_TRUE(got.starts_with("HTTP/1.0 200 OK\r\n")) << got;
  EXPECT_TRUE(got.ends_with(text)) << got;
  ::close(fd);
}

TEST_F(Metrics, ManyClientsAtOnce) {
  text.clear();
  for (int i = 0; text.size() < (1 << 20); ++i)
    text += "tprosshy_x{profile=\"p" + std::to_string(i) + "\"} " + std::to_string(i) + "\n";
  auto m = serve();
  const auto dir = fs::temp_directory_path() / ("tp_metrics." + std::to_string(::getpid()));
  fs::create_directories(dir);
  const auto r = sh("cd " + dir.string() + " && for i in $(seq 32); do " + curl + url(m) +
                    " -o $i & done; wait");
  EXPECT_EQ(r.status, 0);
  for (int i = 1; i <= 32; ++i) {
    std::ifstream f(dir / std::to_string(i), std::ios::binary);
    std::stringstream got;
    got << f.rdbuf();
    EXPECT_TRUE(got.str() == text) << "client " << i << " got " << got.str().size() << " bytes";
  }
  fs::remove_all(dir);
  EXPECT_EQ(calls, 32);
}

TEST_F(Metrics, StalledClientsBlockNoOne) {
  text.assign(8 << 20, '#');  // more than the socket buffers hold
  text.back() = '\n';
  metrics_limits limits;
  limits.request_time = 60s;
  limits.reply_time = 60s;
  auto m = serve(limits);
  // One sends half a request; another asks and never reads the answer.
  const int half = connect_to(m->local_endpoint());
  const int deaf = connect_to(m->local_endpoint());
  ASSERT_GE(half, 0);
  ASSERT_GE(deaf, 0);
  send_all(half, "GET /metr");
  send_all(deaf, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  const auto r = sh(curl + "-o /dev/null -w '%{http_code} %{size_download}' " + url(m));
  EXPECT_EQ(r.out, "200 " + std::to_string(text.size()));
  ::close(half);
  ::close(deaf);
}

TEST_F(Metrics, DropsIdleAndSlowClients) {
  metrics_limits quick;
  quick.request_time = 300ms;
  quick.reply_time = 300ms;
  text.assign(32 << 20, '#');
  auto m = serve(quick);
  const int idle = connect_to(m->local_endpoint());
  ASSERT_GE(idle, 0);
  EXPECT_EQ(read_to_end(idle), "");
  ::close(idle);
  // Kept alive, then idle: the first answer comes, then the close.
  const int kept = connect_to(m->local_endpoint());
  ASSERT_GE(kept, 0);
  send_all(kept, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(read_to_end(kept).starts_with("HTTP/1.1 200 OK\r\n"));
  ::close(kept);
  // Never reads its 32 MiB: the server gives up writing.
  const int deaf = connect_to(m->local_endpoint(), 4096);
  ASSERT_GE(deaf, 0);
  send_all(deaf, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  std::this_thread::sleep_for(1s);  // let the write stall and time out while nobody reads
  const auto got = read_to_end(deaf);
  EXPECT_TRUE(got.starts_with("HTTP/1.1 200 OK\r\n"));
  EXPECT_LT(got.size(), text.size());
  ::close(deaf);
}

TEST_F(Metrics, BoundsRequests) {
  auto m = serve();
  const auto big = std::string(10000, 'a');
  EXPECT_EQ(sh(curl + "-o /dev/null -w '%{http_code}' -H 'X-Big: " + big + "' " + url(m)).out,
            "431");
  EXPECT_EQ(sh("printf %s " + big + " | " + curl +
               "-o /dev/null -w '%{http_code}' --data-binary @- " + url(m))
                .out,
            "413");
  const int fd = connect_to(m->local_endpoint());
  ASSERT_GE(fd, 0);
  send_all(fd, "NOT HTTP AT ALL\r\n\r\n");
  EXPECT_TRUE(read_to_end(fd).starts_with("HTTP/1.1 400 Bad Request\r\n"));
  ::close(fd);
  EXPECT_EQ(calls, 0);
}

TEST_F(Metrics, ClosesConnectionsOverTheLimit) {
  metrics_limits two;
  two.connections = 2;
  two.request_time = 60s;
  auto m = serve(two);
  const int a = connect_to(m->local_endpoint()), b = connect_to(m->local_endpoint());
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  // Both are being served once one of them has been answered.
  send_all(a, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(read_response(a).starts_with("HTTP/1.1 200"));
  const int c = connect_to(m->local_endpoint());
  ASSERT_GE(c, 0);
  EXPECT_EQ(read_to_end(c), "");
  ::close(c);
  ::close(a);
  ::close(b);
  std::string code;
  for (int i = 0; i < 200 && code != "200"; ++i) {
    code = sh(curl + "-o /dev/null -w '%{http_code}' " + url(m)).out;
    if (code != "200") std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(code, "200");
}

TEST_F(Metrics, CallbackErrorsAre500) {
  fail = true;
  auto m = serve();
  EXPECT_EQ(sh(curl + "-o /dev/null -w '%{http_code}' " + url(m)).out, "500");
  fail = false;
  EXPECT_EQ(sh(curl + "-o /dev/null -w '%{http_code}' " + url(m)).out, "200");
}

TEST_F(Metrics, ListensOnIpv6) {
  auto m = serve({}, {asio::ip::make_address("::1"), 0});
  const auto r = sh(curl + "-g " + url(m));
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.out, text);
}

TEST_F(Metrics, StopClosesKeptConnections) {
  metrics_limits slow;
  slow.request_time = 60s;
  auto m = serve(slow);
  const int fd = connect_to(m->local_endpoint());
  ASSERT_GE(fd, 0);
  send_all(fd, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(read_response(fd).ends_with(text));
  io.on_io([&] { m->stop(); });
  EXPECT_EQ(read_to_end(fd), "");  // long before its 60 s
  ::close(fd);
  EXPECT_LT(connect_to(m->local_endpoint()), 0);
}

}  // namespace
}  // namespace tprosshy::control
