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

// --- reload: what is kept, started, drained, refused --------------------------------

using step = reload_plan::step;

std::map<std::string, config::profile> running_of(const config::config& c) {
  std::map<std::string, config::profile> out;
  for (auto& p : c.profiles)
    if (p.enabled) out.emplace(p.name, p);
  return out;
}

std::string steps(const reload_plan& p) {
  std::string out;
  for (auto& e : p.profiles)
    out += (out.empty() ? "" : " ") + e.name + ":" +
           (e.what == step::keep       ? "keep"
            : e.what == step::disabled ? "off"
            : e.replaces               ? "replace"
                                       : "start");
  for (auto& n : p.removed) out += " -" + n;
  return out;
}

struct reload_case {
  const char* what;
  void (*change)(config::config&);
  const char* want;  // steps(), or the fixed keys joined by ","
};

TEST(Plan, ReloadDecidesByName) {
  const reload_case cases[] = {
      {"nothing changed", [](config::config&) {}, "wide:keep narrow:keep off:off"},
      {"routes and DNS apply in place",
       [](config::config& c) {
         c.profiles[0].subnets.push_back(pfx("10.9.0.0/16"));
         c.profiles[0].dns.domains = {"other.test"};
         c.profiles[1].refuse_other = false;
       },
       "wide:keep narrow:keep off:off"},
      {"a new host means new ssh, the old one drains",
       [](config::config& c) { c.profiles[1].hosts = {"srv9"}; },
       "wide:keep narrow:replace off:off"},
      {"ssh_args, pool, health and host keys too",
       [](config::config& c) {
         c.profiles[0].ssh_args = {"-p", "2222"};
         c.profiles[1].pool = 3;
       },
       "wide:replace narrow:replace off:off"},
      {"reordered: kept by name",
       [](config::config& c) { std::swap(c.profiles[0], c.profiles[1]); },
       "narrow:keep wide:keep off:off"},
      {"removed and disabled drain",
       [](config::config& c) {
         c.profiles.erase(c.profiles.begin());
         c.profiles[0].enabled = false;
       },
       "narrow:off off:off -narrow -wide"},
      {"enabled and added start",
       [](config::config& c) {
         c.profiles[2].enabled = true;
         c.profiles.push_back({.name = "fresh", .hosts = {"srv4"}});
       },
       "wide:keep narrow:keep off:start fresh:start"},
      {"renamed: a new one starts, the old name drains",
       [](config::config& c) { c.profiles[1].name = "slim"; },
       "wide:keep slim:start off:off -narrow"},
  };
  const auto now = two_profiles();
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    auto next = now;
    c.change(next);
    const auto plan = plan_reload(now, next, running_of(now));
    EXPECT_TRUE(plan.fixed.empty());
    EXPECT_EQ(steps(plan), c.want);
  }
}

TEST(Plan, ReloadRefusesWhatCannotChangeWhileRunning) {
  const reload_case cases[] = {
      {"mode", [](config::config& c) { c.mode = config::run_mode::gateway; }, "mode"},
      {"interfaces", [](config::config& c) { c.gateway_interfaces = {"eth1"}; },
       "gateway.interfaces"},
      {"ports",
       [](config::config& c) {
         c.tcp_port = 7070;
         c.dns_port = 5353;
       },
       "listen.tcp_port,listen.dns_port"},
      {"listen address",
       [](config::config& c) { c.listen_address = boost::asio::ip::make_address("198.18.9.1"); },
       "listen.address"},
      {"the rest",
       [](config::config& c) {
         c.cache_size = 5;
         c.control_socket = "/run/other.sock";
         c.helper_socket = "/run/other-helper.sock";
         c.ssh_user = "nobody";
         c.metrics_listen = config::endpoint{ip("127.0.0.1"), 9100};
       },
       "dns.cache_size,control.socket,helper,ssh_user,metrics.listen"},
      {"lockdown may change", [](config::config& c) { c.lockdown = true; }, ""},
  };
  const auto now = two_profiles();
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    auto next = now;
    c.change(next);
    next.profiles[1].hosts = {"srv9"};  // refused, the plan says nothing of profiles
    const auto plan = plan_reload(now, next, running_of(now));
    std::string keys;
    for (auto& k : plan.fixed) keys += (keys.empty() ? "" : ",") + k;
    EXPECT_EQ(keys, c.want);
    EXPECT_EQ(plan.profiles.empty(), !keys.empty());
  }
}

}  // namespace
}  // namespace tprosshy::runtime
