#include <gtest/gtest.h>

#include "runtime/plan.hpp"

namespace tprosshy::runtime {
namespace {

net::prefix pfx(const char* s) { return *net::parse_prefix(s); }
net::address ip(const char* s) { return boost::asio::ip::make_address(s); }

config::config two_profiles() {
  config::config c;
  config::profile wide{.name = "wide", .host = "srv1"};
  wide.subnets = {pfx("198.19.0.0/16"), pfx("fd00:11::/64")};
  wide.exclude = {pfx("198.19.5.0/24")};
  wide.dns.domains = {"net1.test"};
  config::profile narrow{.name = "narrow", .host = "srv2"};
  narrow.subnets = {pfx("198.19.2.0/24")};
  config::profile off{.name = "off", .host = "srv3", .enabled = false};
  off.subnets = {pfx("10.0.0.0/8")};
  c.profiles = {wide, narrow, off};
  c.exclude = {pfx("198.19.9.0/24")};
  return c;
}

TEST(Plan, TableAndRulesetAgree) {
  auto cfg = two_profiles();
  auto t = make_table(cfg);
  EXPECT_EQ(t.lookup(ip("198.19.1.10")), 0u);
  EXPECT_EQ(t.lookup(ip("198.19.2.10")), 1u);
  EXPECT_EQ(t.lookup(ip("198.19.5.1")), std::nullopt);  // the profile's own exclude
  EXPECT_EQ(t.lookup(ip("198.19.9.1")), std::nullopt);  // global exclude
  EXPECT_EQ(t.lookup(ip("10.1.2.3")), std::nullopt);    // disabled profile routes nothing

  auto r = make_ruleset(cfg, t, {{ip("198.18.1.2"), 22, "wide"}}, {40001, std::nullopt}, {});
  ASSERT_EQ(r.profiles.size(), 2u);
  EXPECT_EQ(r.profiles[0].name, "wide");
  EXPECT_EQ(r.profiles[1].name, "narrow");
  // wide: 198.19/16 minus narrow's /24, its own exclude and the global exclude.
  std::vector<nft::addr_range> want{{ip("198.19.0.0"), ip("198.19.1.255")},
                                    {ip("198.19.3.0"), ip("198.19.4.255")},
                                    {ip("198.19.6.0"), ip("198.19.8.255")},
                                    {ip("198.19.10.0"), ip("198.19.255.255")}};
  EXPECT_EQ(r.profiles[0].v4, want);
  ASSERT_EQ(r.profiles[0].v6.size(), 1u);
  EXPECT_EQ(r.profiles[1].v4,
            (std::vector<nft::addr_range>{{ip("198.19.2.0"), ip("198.19.2.255")}}));
  EXPECT_EQ(r.exclude, cfg.exclude);
  EXPECT_EQ(r.tcp_port, 40001);
  EXPECT_EQ(r.mark, own_mark);
  EXPECT_FALSE(r.capture_dns);
  EXPECT_FALSE(r.profiles[0].learned);
  EXPECT_TRUE(r.interfaces.empty());
}

TEST(Plan, DnsCaptureAndLearnedSetsOnlyWithDns) {
  auto cfg = two_profiles();
  auto t = make_table(cfg);
  EXPECT_TRUE(wants_dns(cfg));
  auto r = make_ruleset(cfg, t, {}, {40001, 40053}, {ip("198.18.0.53")});
  EXPECT_TRUE(r.capture_dns);
  EXPECT_EQ(r.dns_port, 40053);
  EXPECT_EQ(r.resolvers, std::vector<net::address>{ip("198.18.0.53")});
  EXPECT_TRUE(r.profiles[0].learned);   // has domains, learn_routes by default
  EXPECT_FALSE(r.profiles[1].learned);  // no domains
  cfg.profiles[0].dns.learn_routes = false;
  EXPECT_FALSE(make_ruleset(cfg, t, {}, {40001, 40053}, {}).profiles[0].learned);
  cfg.profiles[0].dns.domains.clear();
  EXPECT_FALSE(wants_dns(cfg));
}

TEST(Plan, GatewayModeHooksTheLanInterfaces) {
  auto cfg = two_profiles();
  cfg.mode = config::run_mode::gateway;
  cfg.gateway_interfaces = {"eth1", "eth2"};
  auto r = make_ruleset(cfg, make_table(cfg), {}, {40001, std::nullopt}, {});
  EXPECT_EQ(r.interfaces, cfg.gateway_interfaces);
  EXPECT_TRUE(r.output);  // the gateway's own traffic is routed too
}

}  // namespace
}  // namespace tprosshy::runtime
