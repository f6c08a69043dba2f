#pragma once
// Sample rulesets shared by the golden render test and the netns netlink test.
#include <map>
#include <string>

#include "nft/ruleset.hpp"

namespace tprosshy::nft::samples {

inline net::address ip(const char* s) { return boost::asio::ip::make_address(s); }
inline addr_range range(const char* first, const char* last) { return {ip(first), ip(last)}; }
inline addr_range cidr(const char* text) {
  auto p = net::parse_prefix(text).value();
  return {p.first(), p.last()};
}
inline net::prefix pfx(const char* text) { return net::parse_prefix(text).value(); }

inline ruleset local_one_profile() {
  ruleset r;
  r.tcp_port = 12345;
  r.profiles.push_back({"corp", {cidr("10.20.0.0/16")}, {}, false});
  return r;
}

inline ruleset two_profiles() {
  ruleset r;
  r.mark = 0x7470;
  r.tcp_port = 40001;
  r.capture_dns = true;
  r.dns_port = 40053;
  r.resolvers = {ip("127.0.0.53"), ip("198.18.0.53"), ip("fd00:53::1"), ip("127.0.0.53")};
  r.bypass = {{ip("198.18.1.10"), 22, "corp"}, {ip("fd00:1::10"), 2222, "lab-2"}};
  r.exclude = {pfx("192.168.0.0/16"), pfx("10.20.5.0/24"), pfx("fd00:20:5::/48")};
  r.profiles.push_back(
      {"corp", {cidr("10.20.0.0/16"), cidr("172.16.0.0/12")}, {cidr("fd00:20::/32")}, true});
  r.profiles.push_back({"lab-2", {cidr("198.19.0.0/16")}, {cidr("fd00:99::/64")}, false});
  return r;
}

inline ruleset gateway() {
  ruleset r;
  r.mark = 1;
  r.interfaces = {"eth1", "lan-bridge0"};
  r.tcp_port = 5000;
  r.capture_dns = true;
  r.dns_port = 5353;
  r.capture_all_dns = true;
  r.bypass = {{ip("198.18.1.10"), 22, "corp"}};
  r.profiles.push_back({"corp", {cidr("10.0.0.0/8")}, {}, false});
  return r;
}

// Gateway mode capturing the configured resolvers: LAN queries to the gateway's own
// addresses are redirected too.
inline ruleset gateway_resolvers() {
  ruleset r;
  r.mark = 0x7470;
  r.interfaces = {"eth1", "wlan0"};
  r.tcp_port = 40001;
  r.capture_dns = true;
  r.dns_port = 40053;
  r.resolvers = {ip("127.0.0.53"), ip("fd00:53::1")};
  r.bypass = {{ip("198.18.1.10"), 22, "corp"}};
  r.profiles.push_back({"corp", {cidr("10.20.0.0/16")}, {cidr("fd00:20::/48")}, true});
  return r;
}

inline ruleset everything() {
  ruleset r;
  r.tcp_port = 1080;
  r.exclude = {pfx("198.18.0.0/15")};
  r.profiles.push_back({"all", {cidr("0.0.0.0/0")}, {cidr("::/0")}, false});
  return r;
}

inline ruleset unaligned() {
  ruleset r;
  r.tcp_port = 1080;
  r.profiles.push_back(
      {"9odd_name",
       {range("10.0.0.1", "10.0.0.6"), range("10.0.1.0", "10.0.2.255"),
        // two halves that make one /24
        range("192.168.0.128", "192.168.0.255"), range("192.168.0.0", "192.168.0.127"),
        range("255.255.255.0", "255.255.255.255")},
       {range("fd00::1", "fd00::ff"), range("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0",
                                            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")},
       false});
  return r;
}

// Everything but TCP refused for one profile (its routed and learned sets), not for the
// other; DNS not captured, so it passes.
inline ruleset refusing() {
  ruleset r = two_profiles();
  r.capture_dns = false;
  r.resolvers.clear();
  r.profiles[0].refuse_other = true;
  return r;
}

// The same in gateway mode (the forward hook too), and for a user's table (meta skuid).
inline ruleset refusing_gateway() {
  ruleset r = gateway_resolvers();
  r.profiles[0].refuse_other = true;
  return r;
}

inline ruleset refusing_confined() {
  ruleset r = local_one_profile();
  r.mark = 0x7471;
  r.skuid = 1000;
  r.profiles[0].refuse_other = true;
  return r;
}

// The kill switch: a lock table beside the main one. Locally with DNS captured at listed
// resolvers, one profile refusing what is not TCP and one passing it; and for a gateway.
inline ruleset lockdown() {
  ruleset r = two_profiles();
  r.profiles[0].refuse_other = true;
  r.lock = lock_mode::on;
  return r;
}

inline ruleset lockdown_gateway() {
  ruleset r = refusing_gateway();
  r.lock = lock_mode::on;
  return r;
}

inline std::map<std::string, ruleset> all() {
  return {{"local_one_profile", local_one_profile()},
          {"two_profiles", two_profiles()},
          {"gateway", gateway()},
          {"gateway_resolvers", gateway_resolvers()},
          {"everything", everything()},
          {"unaligned", unaligned()},
          {"refusing", refusing()},
          {"refusing_gateway", refusing_gateway()},
          {"refusing_confined", refusing_confined()},
          {"lockdown", lockdown()},
          {"lockdown_gateway", lockdown_gateway()}};
}

}  // namespace tprosshy::nft::samples
