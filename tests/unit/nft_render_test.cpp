// Golden tests: render() of sample rulesets against tests/unit/data/nft/<name>.nft.
// UPDATE_GOLDEN=1 rewrites the files (review the diff before committing it).
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "nft/ruleset.hpp"
#include "nft_samples.hpp"

namespace tprosshy::nft {
namespace {

std::string golden_path(const std::string& name) {
  return std::string(TPROSSHY_SOURCE_DIR) + "/tests/unit/data/nft/" + name + ".nft";
}

class golden : public testing::TestWithParam<std::string> {};

TEST_P(golden, render_matches_file) {
  auto samples = samples::all();
  auto text = render(samples.at(GetParam()));
  auto path = golden_path(GetParam());
  if (const char* u = std::getenv("UPDATE_GOLDEN"); u && std::string(u) == "1") {
    std::ofstream(path) << text;
    GTEST_SKIP() << "rewrote " << path;
  }
  std::ifstream in(path);
  ASSERT_TRUE(in) << path << " missing; run with UPDATE_GOLDEN=1";
  std::stringstream want;
  want << in.rdbuf();
  EXPECT_EQ(text, want.str());
}

INSTANTIATE_TEST_SUITE_P(nft, golden,
                         testing::Values("local_one_profile", "two_profiles", "gateway",
                                         "gateway_resolvers", "everything", "unaligned", "refusing",
                                         "refusing_gateway", "refusing_confined", "lockdown",
                                         "lockdown_gateway"));

TEST(render, deterministic) {
  auto r = samples::two_profiles();
  EXPECT_EQ(render(r), render(r));
}

TEST(render, omits_empty_sets_and_their_rules) {
  auto r = samples::local_one_profile();
  auto text = render(r);
  EXPECT_EQ(text.find("route6_corp"), std::string::npos);
  EXPECT_EQ(text.find("exclude"), std::string::npos);
  EXPECT_EQ(text.find("nat_prerouting"), std::string::npos);
  EXPECT_EQ(text.find("meta mark"), std::string::npos);
  EXPECT_NE(text.find("ip daddr @route4_corp meta l4proto tcp redirect to :12345"),
            std::string::npos);
}

TEST(render, rule_order_follows_the_design) {
  auto text = render(samples::two_profiles());
  std::vector<std::string> in_order = {"meta mark 0x00007470 return",
                                       "ip daddr @resolvers4 udp dport 53 redirect to :40053",
                                       "ip6 daddr @resolvers6 tcp dport 53 redirect to :40053",
                                       "fib daddr type local return",
                                       "ip daddr 198.18.1.10 tcp dport 22 return",
                                       "ip6 daddr fd00:1::10 tcp dport 2222 return",
                                       "ip daddr @exclude4 return",
                                       "ip6 daddr @exclude6 return",
                                       "ip daddr @route4_corp meta l4proto tcp",
                                       "ip daddr @learn4_corp meta l4proto tcp",
                                       "ip6 daddr @route6_lab-2 meta l4proto tcp"};
  size_t at = 0;
  for (const auto& s : in_order) {
    auto pos = text.find(s, at);
    ASSERT_NE(pos, std::string::npos) << "missing or out of order: " << s << "\n" << text;
    at = pos;
  }
}

TEST(render, ranges_merge_and_print_as_prefixes_where_they_can) {
  auto text = render(samples::unaligned());
  EXPECT_NE(text.find("10.0.0.1-10.0.0.6"), std::string::npos) << text;
  EXPECT_NE(text.find("10.0.1.0-10.0.2.255"), std::string::npos) << text;
  EXPECT_NE(text.find("192.168.0.0/24"), std::string::npos) << text;
  EXPECT_NE(text.find("255.255.255.0/24"), std::string::npos) << text;
  EXPECT_NE(text.find("fd00::1-fd00::ff"), std::string::npos) << text;
}

TEST(render, whole_address_space) {
  auto text = render(samples::everything());
  EXPECT_NE(text.find("elements = { 0.0.0.0/0 }"), std::string::npos) << text;
  EXPECT_NE(text.find("elements = { ::/0 }"), std::string::npos) << text;
}

TEST(render, dns_port_takes_only_what_was_redirected) {
  auto text = render(samples::two_profiles());
  std::vector<std::string> in_order = {"chain filter_input {",
                                       "type filter hook input priority 0; policy accept;",
                                       "udp dport 40053 ct status dnat accept",
                                       "udp dport 40053 reject comment",
                                       "tcp dport 40053 ct status dnat accept",
                                       "tcp dport 40053 reject with tcp reset"};
  size_t at = 0;
  for (const auto& s : in_order) {
    auto pos = text.find(s, at);
    ASSERT_NE(pos, std::string::npos) << "missing or out of order: " << s << "\n" << text;
    at = pos;
  }
  // No DNS listener, no guard.
  EXPECT_EQ(render(samples::local_one_profile()).find("filter_input"), std::string::npos);
}

TEST(render, lan_dns_to_the_gateway_itself_is_redirected) {
  auto text = render(samples::gateway_resolvers());
  for (std::string i : {"eth1", "wlan0"}) {
    auto udp = text.find("iifname \"" + i +
                         "\" udp dport 53 fib daddr type local redirect to :40053 comment");
    auto tcp = text.find("iifname \"" + i + "\" tcp dport 53 fib daddr type local redirect");
    auto jump = text.find("iifname \"" + i + "\" jump route");
    ASSERT_NE(udp, std::string::npos) << text;
    ASSERT_NE(tcp, std::string::npos) << text;
    EXPECT_LT(udp, tcp);
    EXPECT_LT(tcp, jump);
  }
  // Not for this machine's own traffic, and `capture: all` needs no extra rule.
  auto local = samples::gateway_resolvers();
  local.interfaces.clear();
  EXPECT_EQ(render(local).find("fib daddr type local redirect"), std::string::npos);
  EXPECT_EQ(render(samples::gateway()).find("fib daddr type local redirect"), std::string::npos);
}

TEST(render, duplicate_resolvers_and_bypass_appear_once) {
  auto r = samples::two_profiles();
  r.bypass.push_back(r.bypass.front());
  auto text = render(r);
  auto first = text.find("127.0.0.53");
  ASSERT_NE(first, std::string::npos);
  EXPECT_EQ(text.find("127.0.0.53", first + 1), std::string::npos);
  auto b = text.find("ip daddr 198.18.1.10 tcp dport 22");
  EXPECT_EQ(text.find("ip daddr 198.18.1.10 tcp dport 22", b + 1), std::string::npos);
}

TEST(render, skuid_goes_first_on_every_redirect_rule_and_nowhere_else) {
  auto r = samples::two_profiles();
  r.skuid = 1000;
  auto text = render(r);
  for (const std::string s :
       {"meta skuid 1000 ip daddr @resolvers4 udp dport 53 redirect to :40053",
        "meta skuid 1000 ip6 daddr @resolvers6 tcp dport 53 redirect to :40053",
        "meta skuid 1000 ip daddr @route4_corp meta l4proto tcp redirect to :40001",
        "meta skuid 1000 ip daddr @learn4_corp meta l4proto tcp redirect to :40001",
        "meta skuid 1000 ip6 daddr @route6_lab-2 meta l4proto tcp redirect to :40001"})
    EXPECT_NE(text.find(s), std::string::npos) << s << "\n" << text;
  size_t redirects = 0, matched = 0;
  for (size_t at = 0; (at = text.find("redirect to", at)) != std::string::npos; ++at) ++redirects;
  for (size_t at = 0; (at = text.find("meta skuid 1000 ", at)) != std::string::npos; ++at)
    ++matched;
  EXPECT_EQ(matched, redirects) << text;
  EXPECT_EQ(text.find("meta skuid 1000 fib"), std::string::npos);
  EXPECT_EQ(text.find("meta skuid"), text.find("meta skuid 1000 ip daddr @resolvers4")) << text;

  // Gateway rules too (a confined caller never has interfaces, but the value allows it).
  auto gw = samples::gateway_resolvers();
  gw.skuid = 7;
  EXPECT_NE(render(gw).find("meta skuid 7 iifname \"eth1\" udp dport 53 fib daddr type local "
                            "redirect to :40053"),
            std::string::npos)
      << render(gw);
  auto all = samples::gateway();
  all.skuid = 0;
  EXPECT_NE(render(all).find("meta skuid 0 udp dport 53 redirect to :5353"), std::string::npos);
  // Unset: no skuid anywhere.
  EXPECT_EQ(render(samples::two_profiles()).find("skuid"), std::string::npos);
}

}  // namespace
}  // namespace tprosshy::nft
