#include <gtest/gtest.h>

#include <algorithm>
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
  EXPECT_EQ(f.host_key_checking, "");
  EXPECT_EQ(parse_ssh_g("stricthostkeychecking false\n").host_key_checking, "false");
  EXPECT_EQ(parse_ssh_g("stricthostkeychecking accept-new\n").host_key_checking, "accept-new");
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
      tunnel_command({"-F", "/x/ssh_config", "-o", "ControlMaster=no"}, "srv1", "/run/t.1/net1");
  auto at = [&](const std::string& s) {
    return std::find(args.begin(), args.end(), s) - args.begin();
  };
  EXPECT_EQ(args.front(), "-N");
  EXPECT_EQ(args.back(), "srv1");
  EXPECT_EQ(args[args.size() - 2], "--");
  // ssh keeps the first value of an option: ours cannot be overridden by the user's.
  EXPECT_LT(at("ControlMaster=yes"), at("ControlMaster=no"));
  EXPECT_LT(at("ControlPath=/run/t.1/net1"), at("-F"));
  EXPECT_LT(at("ClearAllForwardings=yes"), at("-F"));
  EXPECT_LT(at("BatchMode=yes"), at("-F"));
  // No TCP port of any kind.
  for (auto& a : args) {
    EXPECT_NE(a, "-D");
    EXPECT_NE(a, "-L");
    // Host-key checking is the user's business: never turned off here.
    EXPECT_EQ(a.find("StrictHostKeyChecking"), std::string::npos);
  }
}

}  // namespace
}  // namespace tprosshy::tunnel
