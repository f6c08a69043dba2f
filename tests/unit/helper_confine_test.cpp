// What a caller may install, with the port check faked.
#include <gtest/gtest.h>

#include <set>
#include <system_error>
#include <tuple>

#include "helper/confine.hpp"
#include "nft_samples.hpp"

namespace tprosshy::helper {
namespace {

namespace samples = nft::samples;

// Ports the fake kernel says each uid holds on loopback.
struct fake_ports {
  std::set<std::tuple<port_use, uint16_t, uint32_t>> held;
  std::vector<std::tuple<port_use, uint16_t, uint32_t>> asked;
  port_check check() {
    return [this](port_use u, uint16_t p, uint32_t uid) -> std::string {
      asked.emplace_back(u, p, uid);
      return held.contains({u, p, uid}) ? "" : "not yours";
    };
  }
};

std::string refusal(const nft::ruleset& r, caller c, const port_check& owns) {
  try {
    confine(r, c, owns);
    return "";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EPERM);
    return e.what();
  }
}

TEST(helper_confine, root_gets_its_ruleset_in_table_tprosshy_with_the_own_mark) {
  fake_ports ports;
  auto r = samples::gateway_resolvers();
  r.table = "other";
  r.mark = 1;
  auto got = confine(r, {0, 0}, ports.check());
  EXPECT_TRUE(ports.asked.empty());  // root's ports are root's business
  EXPECT_EQ(got.table, "tprosshy");
  EXPECT_EQ(got.mark, 0x7470u);
  EXPECT_FALSE(got.skuid);
  got.table = r.table;
  got.mark = r.mark;
  EXPECT_EQ(got, r);
  EXPECT_EQ(mark_for({0, 0}), 0x7470u);
}

TEST(helper_confine, a_user_gets_a_table_of_its_own_confined_to_its_uid) {
  fake_ports ports;
  auto r = samples::two_profiles();
  r.skuid = 0;  // forged: forced back to the caller's uid
  ports.held = {{port_use::tcp_listen, 40001, 1000},
                {port_use::tcp_listen, 40053, 1000},
                {port_use::udp_bound, 40053, 1000}};
  auto got = confine(r, {1000, 1000}, ports.check());
  EXPECT_EQ(got.table, "tprosshy_u1000");
  EXPECT_EQ(got.mark, 0x7471u);
  EXPECT_EQ(mark_for({1000, 1000}), 0x7471u);
  EXPECT_EQ(got.skuid, 1000u);
  EXPECT_EQ(ports.asked.size(), 3u);
  EXPECT_EQ(got.profiles, r.profiles);
  EXPECT_NE(nft::render(got).find("meta skuid 1000 ip daddr @route4_corp"), std::string::npos);
}

TEST(helper_confine, a_user_may_not) {
  fake_ports ports;
  ports.held = {{port_use::tcp_listen, 40001, 1000},
                {port_use::tcp_listen, 40053, 1000},
                {port_use::udp_bound, 40053, 1000}};
  auto r = samples::two_profiles();
  auto gw = r;
  gw.interfaces = {"eth1"};
  EXPECT_EQ(refusal(gw, {1000, 1000}, ports.check()),
            "install: interfaces: gateway mode needs a root daemon (uid 1000): Operation not "
            "permitted");
  auto no_output = r;
  no_output.output = false;
  EXPECT_NE(refusal(no_output, {1000, 1000}, ports.check()).find("install: output: "),
            std::string::npos);
  auto tcp = r;
  tcp.tcp_port = 22;
  EXPECT_EQ(refusal(tcp, {1000, 1000}, ports.check()),
            "install: tcp_port 22: not yours: Operation not permitted");
  // The DNS port needs both UDP and TCP.
  ports.held.erase({port_use::udp_bound, 40053, 1000});
  EXPECT_EQ(refusal(r, {1000, 1000}, ports.check()),
            "install: dns_port 40053: not yours: Operation not permitted");
  ports.held.insert({port_use::udp_bound, 40053, 1000});
  ports.held.erase({port_use::tcp_listen, 40053, 1000});
  EXPECT_NE(refusal(r, {1000, 1000}, ports.check()).find("dns_port 40053"), std::string::npos);
  // Another uid's ports are not this one's.
  EXPECT_NE(refusal(samples::local_one_profile(), {1001, 1001}, ports.check()).find("tcp_port"),
            std::string::npos);
  // Without DNS capture the DNS port is not asked about; without redirects, nothing is.
  ports.asked.clear();
  auto no_dns = r;
  no_dns.capture_dns = false;
  EXPECT_EQ(refusal(no_dns, {1000, 1000}, ports.check()), "");
  EXPECT_EQ(ports.asked.size(), 1u);
  ports.asked.clear();
  nft::ruleset nothing;
  EXPECT_EQ(refusal(nothing, {1000, 1000}, ports.check()), "");
  EXPECT_TRUE(ports.asked.empty());
  // The lock outlives every process: root's alone, and a user's install never touches it.
  auto locked = nothing;
  locked.lock = nft::lock_mode::on;
  EXPECT_EQ(refusal(locked, {1000, 1000}, ports.check()),
            "install: lockdown: the lock table outlives any process and needs a root daemon "
            "(uid 1000): Operation not permitted");
  locked.lock = nft::lock_mode::off;
  EXPECT_EQ(confine(locked, {1000, 1000}, ports.check()).lock, nft::lock_mode::leave);
  EXPECT_EQ(confine(locked, {0, 0}, ports.check()).lock, nft::lock_mode::off);
}

}  // namespace
}  // namespace tprosshy::helper
