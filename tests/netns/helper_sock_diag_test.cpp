// sock_diag against the kernel, in this binary's own network namespace.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <csignal>

#include "helper/sock_diag.hpp"
#include "net/fd.hpp"

namespace tprosshy::helper {
namespace {

// A socket bound to addr (port 0: any), listening if TCP; returns its port.
uint16_t bind_to(const net::unique_fd& fd, const char* addr, bool listen) {
  boost::asio::ip::tcp::endpoint ep(boost::asio::ip::make_address(addr), 0);
  if (::bind(fd.get(), ep.data(), static_cast<socklen_t>(ep.size())) != 0) return 0;
  if (listen && ::listen(fd.get(), 4) != 0) return 0;
  socklen_t len = static_cast<socklen_t>(ep.capacity());
  ::getsockname(fd.get(), ep.data(), &len);
  return ep.port();
}

TEST(helper_sock_diag, a_loopback_listener_is_its_owners) {
  for (const char* addr : {"127.0.0.1", "::1", "127.3.4.5"}) {
    SCOPED_TRACE(addr);
    net::unique_fd l(::socket(std::string(addr).find(':') != std::string::npos ? AF_INET6 : AF_INET,
                              SOCK_STREAM, 0));
    auto port = bind_to(l, addr, true);
    ASSERT_NE(port, 0);
    auto found = holders(port_use::tcp_listen, port);
    ASSERT_EQ(found.size(), 1u);
    EXPECT_EQ(found[0].uid, 0u);
    EXPECT_EQ(found[0].address.to_string(), addr);
    EXPECT_EQ(owned_on_loopback(port_use::tcp_listen, port, 0), "");
    EXPECT_EQ(owned_on_loopback(port_use::tcp_listen, port, 1000),
              "a TCP listener of uid 0 holds it");
    // Listening is TCP's business: no UDP socket holds the port.
    EXPECT_EQ(owned_on_loopback(port_use::udp_bound, port, 0), "no UDP socket of uid 0 on it");
  }
}

TEST(helper_sock_diag, reports_the_uid_of_another_user) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) ::_exit(2);
    net::unique_fd l(::socket(AF_INET, SOCK_STREAM, 0)), u(::socket(AF_INET, SOCK_DGRAM, 0));
    uint16_t port = bind_to(l, "127.0.0.1", true);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(u.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) port = 0;
    (void)::write(p[1], &port, sizeof port);
    ::pause();  // until the parent kills it
    ::_exit(0);
  }
  ::close(p[1]);
  uint16_t port = 0;
  ASSERT_EQ(::read(p[0], &port, sizeof port), static_cast<ssize_t>(sizeof port));
  ASSERT_NE(port, 0);
  EXPECT_EQ(owned_on_loopback(port_use::tcp_listen, port, 65534), "");
  EXPECT_EQ(owned_on_loopback(port_use::udp_bound, port, 65534), "");
  EXPECT_EQ(owned_on_loopback(port_use::udp_bound, port, 0), "a UDP socket of uid 65534 holds it");
  ::close(p[0]);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

TEST(helper_sock_diag, refuses_a_port_nobody_holds_or_one_bound_beyond_loopback) {
  uint16_t free_port;
  {
    net::unique_fd l(::socket(AF_INET, SOCK_STREAM, 0));
    free_port = bind_to(l, "127.0.0.1", true);
  }
  EXPECT_EQ(owned_on_loopback(port_use::tcp_listen, free_port, 0),
            "no TCP listener of uid 0 on it");
  net::unique_fd any(::socket(AF_INET, SOCK_STREAM, 0));
  auto port = bind_to(any, "0.0.0.0", true);
  EXPECT_EQ(owned_on_loopback(port_use::tcp_listen, port, 0),
            "the TCP listener on it is bound to 0.0.0.0, not to loopback");
  net::unique_fd udp(::socket(AF_INET6, SOCK_DGRAM, 0));
  port = bind_to(udp, "::", false);
  EXPECT_EQ(owned_on_loopback(port_use::udp_bound, port, 0),
            "the UDP socket on it is bound to ::, not to loopback");
  // A loopback listener beside one on every address does not make the port the caller's.
  net::unique_fd lo(::socket(AF_INET6, SOCK_STREAM, 0)), all(::socket(AF_INET, SOCK_STREAM, 0));
  port = bind_to(lo, "::1", true);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  ASSERT_EQ(::bind(all.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(all.get(), 4), 0);
  EXPECT_EQ(holders(port_use::tcp_listen, port).size(), 2u);
  EXPECT_NE(owned_on_loopback(port_use::tcp_listen, port, 0), "");
}

}  // namespace
}  // namespace tprosshy::helper
