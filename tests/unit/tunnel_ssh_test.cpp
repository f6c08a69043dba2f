#include <gtest/gtest.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "tunnel/ssh.hpp"

namespace tprosshy::tunnel {
namespace {

TEST(SshG, ParsesHostPortAndJumps) {
  auto f = parse_ssh_g(
      "user root\nhostname 198.18.1.2\nport 2222\nproxyjump alice@jump1:2200,jump2\n"
      "proxycommand none\n");
  EXPECT_EQ(f.hostname, "198.18.1.2");
  EXPECT_EQ(f.port, 2222);
  ASSERT_EQ(f.proxy_jump.size(), 2u);
  EXPECT_EQ(f.proxy_jump[0], "alice@jump1:2200");
  EXPECT_EQ(f.proxy_jump[1], "jump2");
  EXPECT_FALSE(f.proxy_command);
}

TEST(SshG, NoneMeansNone) {
  auto f = parse_ssh_g("hostname h\nport 22\nproxyjump none\nproxycommand nc %h %p\n");
  EXPECT_TRUE(f.proxy_jump.empty());
  EXPECT_TRUE(f.proxy_command);
}

TEST(Jump, Forms) {
  auto j = parse_jump("alice@host:2200");
  ASSERT_TRUE(j);
  EXPECT_EQ(j->destination, "alice@host");
  EXPECT_EQ(j->port, 2200);
  j = parse_jump("ssh://bob@[fd00::1]:22");
  ASSERT_TRUE(j);
  EXPECT_EQ(j->destination, "bob@fd00::1");
  EXPECT_EQ(j->port, 22);
  j = parse_jump("bastion");
  ASSERT_TRUE(j);
  EXPECT_EQ(j->destination, "bastion");
  EXPECT_FALSE(j->port);
  EXPECT_FALSE(parse_jump("host:99999"));
  EXPECT_FALSE(parse_jump("[fd00::1"));
  EXPECT_FALSE(parse_jump(""));
}

TEST(Command, OurOptionsFirstDestinationLast) {
  auto args =
      tunnel_command({"-F", "/x/ssh_config", "-o", "ExitOnForwardFailure=no"}, "srv1", 40001);
  auto at = [&](const std::string& s) {
    return std::find(args.begin(), args.end(), s) - args.begin();
  };
  EXPECT_EQ(args.front(), "-N");
  EXPECT_EQ(args.back(), "srv1");
  EXPECT_EQ(args[args.size() - 2], "--");
  EXPECT_LT(at("ExitOnForwardFailure=yes"), at("ExitOnForwardFailure=no"));
  EXPECT_EQ(args[at("-D") + 1], "127.0.0.1:40001");
  // Host-key checking is the user's business: never turned off here.
  for (auto& a : args) EXPECT_EQ(a.find("StrictHostKeyChecking"), std::string::npos);
}

TEST(Socks, NoListenerMeansNotReady) {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  auto ep = a.local_endpoint();
  a.close();
  bool answered = true;
  boost::asio::co_spawn(io, socks_answers(ep), [&](std::exception_ptr, bool r) { answered = r; });
  io.run();
  EXPECT_FALSE(answered);
}

}  // namespace
}  // namespace tprosshy::tunnel
