// The helper's wire format: round trips, every limit, truncation and garbage.
#include <gtest/gtest.h>

#include <random>

#include "helper/protocol.hpp"
#include "nft_samples.hpp"

namespace tprosshy::helper {
namespace {

namespace samples = nft::samples;

nft::ruleset full() {
  auto r = samples::two_profiles();
  r.table = "tprosshy_u1000";
  r.interfaces = {"eth1", "lan-bridge0"};
  r.capture_all_dns = true;
  r.output = false;
  r.profiles[0].known = {{samples::ip("10.20.1.1"), std::chrono::seconds(300)},
                         {samples::ip("fd00:20::1"), std::chrono::seconds(86400)}};
  r.skuid = 1000;
  return r;
}

std::span<const uint8_t> body(const std::vector<uint8_t>& frame) {
  return std::span(frame).subspan(4);
}

request round_trip(const request& r) {
  auto f = encode(r);
  EXPECT_EQ(frame_length(std::span<const uint8_t, 4>(f.data(), 4)), f.size() - 4);
  return decode_request(body(f));
}

// The error decoding `r` gives, or "" when it decodes.
std::string refusal(const nft::ruleset& r) {
  try {
    round_trip(install{r});
    return "";
  } catch (const bad_message& e) {
    return e.what();
  }
}

TEST(helper_protocol, every_request_round_trips) {
  std::vector<request> all = {hello{},
                              install{full()},
                              install{nft::ruleset{}},
                              learn{"corp", samples::ip("fd00::5"), 600},
                              learn{"corp", samples::ip("fd00::5"), 600, samples::ip("10.0.0.1")},
                              remove{},
                              lifeline{},
                              refused{},
                              socket{6, socket_kind::udp},
                              socket{4, socket_kind::tcp}};
  for (const auto& sample : samples::all()) all.push_back(install{sample.second});
  for (const auto& r : all) EXPECT_EQ(round_trip(r), r);
}

TEST(helper_protocol, replies_round_trip) {
  for (reply r : {reply{ok{}}, reply{error{EPERM, "gateway mode needs a root daemon"}},
                  reply{counts{}}, reply{counts{{{"corp", 1ull << 40}, {"lab-2", 0}}}}}) {
    auto f = encode(r);
    EXPECT_EQ(decode_reply(body(f)), r);
  }
  // A count is a profile name: a hostile answer cannot smuggle anything else.
  auto f = encode(reply{counts{{{"corp", 3}}}});
  f[4 + 1 + 4 + 2] = 'C';
  try {
    decode_reply(body(f));
    FAIL() << "a bad profile name decoded";
  } catch (const bad_message& e) {
    EXPECT_EQ(std::string(e.what()), "counts: packets[0].profile: 'Corp' is not [a-z0-9_-]{1,32}");
  }
}

TEST(helper_protocol, the_frame_is_length_type_payload_big_endian) {
  auto f = encode(hello{0x01020304});
  EXPECT_EQ(f, (std::vector<uint8_t>{0, 0, 0, 5, 1, 1, 2, 3, 4}));
  f = encode(socket{6, socket_kind::tcp});
  EXPECT_EQ(f, (std::vector<uint8_t>{0, 0, 0, 3, 5, 6, 2}));
}

TEST(helper_protocol, frame_limit) {
  uint8_t over[4] = {0x00, 0x80, 0x00, 0x01};  // 8 MiB + 1
  try {
    frame_length(over);
    FAIL();
  } catch (const bad_message& e) {
    EXPECT_STREQ(e.what(), "frame: 8388609 bytes, limit 8388608");
  }
  uint8_t at[4] = {0x00, 0x80, 0x00, 0x00};
  EXPECT_EQ(frame_length(at), limits::frame);
  uint8_t zero[4] = {};
  EXPECT_THROW(frame_length(zero), bad_message);
}

TEST(helper_protocol, limits_name_the_field) {
  auto r = full();
  r.profiles.resize(1);
  r.profiles[0].v4.clear();
  r.profiles.push_back({"p1", {}, {}, false});
  r.profiles.push_back({"p2", {}, {}, false});
  r.profiles.push_back({"p3", {}, {}, false});
  auto many = r;
  for (uint32_t i = 0; i < 70000; ++i) {
    auto a = net::from_u128(net::to_u128(samples::ip("10.0.0.0")) + 2 * i, true);
    many.profiles[3].v4.push_back({a, a});
  }
  EXPECT_EQ(refusal(many), "install: profiles[3].v4: 70000 ranges, limit 65536");

  // In total, across profiles and excludes.
  auto total = r;
  total.profiles[1].v4.assign(40000, samples::cidr("10.0.0.0/8"));
  total.profiles[2].v6.assign(30000, samples::cidr("fd00::/8"));
  EXPECT_EQ(refusal(total),
            "install: profiles[2].v6: 70004 ranges in the ruleset so far, limit 65536 in total");

  auto profiles = r;
  for (int i = 0; i < 300; ++i) profiles.profiles.push_back({"x" + std::to_string(i), {}, {}});
  EXPECT_EQ(refusal(profiles), "install: profiles: 304 profiles, limit 256");

  auto known = r;
  known.profiles[0].known.assign(65537, {samples::ip("10.0.0.1"), std::chrono::seconds(1)});
  EXPECT_EQ(refusal(known), "install: profiles[0].known: 65537 addresses, limit 65536");

  auto ifs = r;
  ifs.interfaces.assign(65, "eth0");
  EXPECT_EQ(refusal(ifs), "install: interfaces: 65 interfaces, limit 64");
  ifs.interfaces = {"a-name-too-long0"};
  EXPECT_EQ(refusal(ifs),
            "install: interfaces[0]: 'a-name-too-long0' is not an interface name of 1-15 "
            "characters");

  auto res = r;
  res.resolvers.assign(65, samples::ip("127.0.0.53"));
  EXPECT_EQ(refusal(res), "install: resolvers: 65 addresses, limit 64");

  auto by = r;
  by.bypass.assign(1025, {samples::ip("198.18.0.1"), 22, "corp"});
  EXPECT_EQ(refusal(by), "install: bypass: 1025 endpoints, limit 1024");

  auto ex = r;
  ex.exclude.assign(65537, samples::pfx("10.0.0.0/8"));
  EXPECT_EQ(refusal(ex), "install: exclude: 65537 prefixes, limit 65536");

  auto str = r;
  str.table = std::string(300, 'a');
  EXPECT_EQ(refusal(str), "install: table: 300 bytes, limit 256");
}

TEST(helper_protocol, values_are_checked) {
  auto r = full();
  auto bad = [&](auto change, const std::string& want) {
    auto c = r;
    change(c);
    EXPECT_EQ(refusal(c), want);
  };
  bad([](auto& c) { c.table = "Tprosshy"; }, "install: table: 'Tprosshy' is not [a-z0-9_]{1,32}");
  bad([](auto& c) { c.table = "tp-x"; }, "install: table: 'tp-x' is not [a-z0-9_]{1,32}");
  bad([](auto& c) { c.table = std::string(33, 'a'); },
      "install: table: '" + std::string(33, 'a') + "' is not [a-z0-9_]{1,32}");
  bad([](auto& c) { c.profiles[1].name = "a b"; },
      "install: profiles[1].name: 'a b' is not [a-z0-9_-]{1,32}");
  bad([](auto& c) { c.profiles[1].name = "corp"; },
      "install: profiles[1].name: 'corp' appears twice");
  bad([](auto& c) { c.profiles[1].name = ""; },
      "install: profiles[1].name: '' is not [a-z0-9_-]{1,32}");
  bad([](auto& c) { c.tcp_port = 0; },
      "install: tcp_port: port 0, must be 1-65535 where traffic is redirected");
  bad([](auto& c) { c.dns_port = 0; },
      "install: dns_port: port 0, must be 1-65535 where traffic is redirected");
  bad([](auto& c) { c.profiles[0].known[0].ttl = std::chrono::seconds(86401); },
      "install: profiles[0].known[0].ttl: 86401 s, limit 86400");
  bad([](auto& c) { c.profiles[1].known = c.profiles[0].known; },
      "install: profiles[1].known: addresses learned without learned sets");
  bad([](auto& c) { c.profiles[0].v4[0] = samples::range("10.0.0.9", "10.0.0.1"); },
      "install: profiles[0].v4[0]: 10.0.0.9 comes after 10.0.0.1");
  bad([](auto& c) { c.profiles[0].v4[0] = samples::range("10.0.0.1", "fd00::1"); },
      "install: profiles[0].v4[0]: not an IPv4 range");
  bad([](auto& c) { c.profiles[0].v6[0] = samples::range("10.0.0.1", "10.0.0.2"); },
      "install: profiles[0].v6[0]: not an IPv6 range");
  bad([](auto& c) { c.exclude[0].length = 33; },
      "install: exclude[0]: prefix length 33 of an IPv4 address");
  bad([](auto& c) { c.exclude[0].network = samples::ip("192.168.0.1"); },
      "install: exclude[0]: 192.168.0.1/16 has host bits set");
  bad([](auto& c) { c.bypass[0].port = 0; }, "install: bypass[0].port: port 0");
  bad([](auto& c) { c.bypass[0].profile = "A"; },
      "install: bypass[0].profile: 'A' is not [a-z0-9_-]{1,32}");

  // No ports needed where nothing is redirected.
  nft::ruleset empty;
  EXPECT_EQ(refusal(empty), "");
  empty.exclude = {samples::pfx("0.0.0.0/0"), samples::pfx("::/0")};
  EXPECT_EQ(refusal(empty), "");
}

TEST(helper_protocol, the_lock_mode_is_one_of_three) {
  auto r = full();
  r.lock = nft::lock_mode::on;
  auto frame = encode(request{install{r}});
  ASSERT_EQ(frame.back(), 1);  // the last byte of an install
  frame.back() = 3;
  try {
    decode_request(std::span<const uint8_t>(frame).subspan(4));
    FAIL() << "lock 3 accepted";
  } catch (const bad_message& e) {
    EXPECT_EQ(std::string(e.what()), "install: lock: 3 is not 0 (leave), 1 (on) or 2 (off)");
  }
}

TEST(helper_protocol, learn_and_socket_are_checked) {
  auto refused = [](std::vector<uint8_t> f) -> std::string {
    try {
      decode_request(body(f));
      return "";
    } catch (const bad_message& e) {
      return e.what();
    }
  };
  EXPECT_EQ(refused(encode(learn{"corp", samples::ip("10.0.0.1"), 86401})),
            "learn: ttl: 86401 s, limit 86400");
  EXPECT_EQ(refused(encode(learn{"Corp", samples::ip("10.0.0.1"), 1})),
            "learn: profile: 'Corp' is not [a-z0-9_-]{1,32}");
  EXPECT_EQ(refused(encode(socket{5, socket_kind::tcp})), "socket: family: 5, not 4 or 6");
  EXPECT_EQ(refused(encode(socket{4, socket_kind(9)})), "socket: kind: 9, not udp (1) or tcp (2)");
  auto f = encode(hello{});
  f.push_back(0);
  EXPECT_EQ(refused(f), "hello: end: 1 bytes after the end of the message");
  f = encode(learn{"corp", samples::ip("10.0.0.1"), 1});
  f[4 + 1 + 2 + 4] = 5;  // the address family
  EXPECT_EQ(refused(f), "learn: address: address family 5, not 4 or 6");
  f = encode(install{full()});
  f[4 + 1 + 2 + 14 + 4] = 2;  // output, after the table name and the mark
  EXPECT_EQ(refused(f), "install: output: a flag of 2, not 0 or 1");
  EXPECT_EQ(refused({0, 0, 0, 1, 0x42}), "frame: unknown request type 66");
  EXPECT_EQ(refused({0, 0, 0, 1, 0x80}), "frame: unknown request type 128");
}

TEST(helper_protocol, truncation_at_every_byte_is_refused) {
  for (const request& r :
       std::vector<request>{install{full()}, learn{"corp", samples::ip("fd00::1"), 5}, hello{},
                            socket{4, socket_kind::udp}}) {
    auto f = encode(r);
    for (size_t n = 0; n + 1 < f.size() - 4; ++n) {
      auto b = body(f).first(n);
      EXPECT_THROW(decode_request(b), bad_message) << n;
    }
  }
  auto e = encode(reply{error{EPERM, "no"}});
  for (size_t n = 0; n + 1 < e.size() - 4; ++n)
    EXPECT_THROW(decode_reply(body(e).first(n)), bad_message) << n;
}

TEST(helper_protocol, truncation_says_where) {
  auto f = encode(install{full()});
  try {
    decode_request(body(f).first(2));
    FAIL();
  } catch (const bad_message& e) {
    EXPECT_STREQ(e.what(), "install: table: truncated at byte 0 (2 more bytes needed, 1 left)");
  }
}

TEST(helper_protocol, garbage_never_crashes) {
  std::mt19937 rng(7);
  auto valid = encode(install{full()});
  for (int i = 0; i < 20000; ++i) {
    std::vector<uint8_t> b;
    if (i % 2) {
      b.resize(rng() % 200);
      for (auto& x : b) x = static_cast<uint8_t>(rng());
      if (!b.empty()) b[0] = static_cast<uint8_t>(1 + rng() % 5);
    } else {  // a valid message with a few bytes flipped
      b.assign(valid.begin() + 4, valid.end());
      for (int k = 0; k < 3; ++k) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    }
    try {
      auto r = decode_request(b);
      EXPECT_EQ(round_trip(r), r);
    } catch (const bad_message&) {
    }
    try {
      decode_reply(b);
    } catch (const bad_message&) {
    }
  }
}

TEST(helper_protocol, names) {
  EXPECT_TRUE(valid_profile_name("9odd_name"));
  EXPECT_TRUE(valid_profile_name("lab-2"));
  EXPECT_TRUE(valid_profile_name(std::string(32, 'a')));
  EXPECT_FALSE(valid_profile_name(std::string(33, 'a')));
  EXPECT_FALSE(valid_profile_name("a.b"));
  EXPECT_TRUE(valid_table_name("tprosshy_u65534"));
  EXPECT_FALSE(valid_table_name("tprosshy-u"));
}

}  // namespace
}  // namespace tprosshy::helper
