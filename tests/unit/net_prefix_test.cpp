#include <gtest/gtest.h>

#include "net/prefix.hpp"

namespace tprosshy::net {
namespace {

address A(const char* text) { return boost::asio::ip::make_address(text); }

prefix P(const char* text) {
  std::string err;
  auto p = parse_prefix(text, &err);
  if (!p) throw std::runtime_error(err);
  return *p;
}

TEST(NetPrefix, ParsesV4) {
  auto p = parse_prefix("10.20.0.0/16");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->network, A("10.20.0.0"));
  EXPECT_EQ(p->length, 16u);
  EXPECT_TRUE(p->is_v4());
  EXPECT_EQ(p->max_length(), 32u);
  EXPECT_EQ(p->to_string(), "10.20.0.0/16");
  EXPECT_EQ(p->first(), A("10.20.0.0"));
  EXPECT_EQ(p->last(), A("10.20.255.255"));
}

TEST(NetPrefix, ParsesV6) {
  auto p = parse_prefix("fd00:20::/48");
  ASSERT_TRUE(p);
  EXPECT_FALSE(p->is_v4());
  EXPECT_EQ(p->max_length(), 128u);
  EXPECT_EQ(p->length, 48u);
  EXPECT_EQ(p->to_string(), "fd00:20::/48");
  EXPECT_EQ(p->last(), A("fd00:20:0:ffff:ffff:ffff:ffff:ffff"));
  EXPECT_EQ(P("FD00:0020:0000::/48"), *p);  // any spelling, one canonical form
}

TEST(NetPrefix, BareAddressIsAHostPrefix) {
  EXPECT_EQ(P("198.18.1.2"), (prefix{A("198.18.1.2"), 32}));
  EXPECT_EQ(P("fd00::1"), (prefix{A("fd00::1"), 128}));
  EXPECT_EQ(P("198.18.1.2").last(), A("198.18.1.2"));
  EXPECT_EQ(P("198.18.1.2").to_string(), "198.18.1.2/32");
}

TEST(NetPrefix, ZeroAndFullLengths) {
  EXPECT_EQ(P("0.0.0.0/0").last(), A("255.255.255.255"));
  EXPECT_EQ(P("::/0").last(), A("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
  EXPECT_EQ(P("255.255.255.255/32").last(), A("255.255.255.255"));
  EXPECT_EQ(P("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128").length, 128u);
  EXPECT_TRUE(P("0.0.0.0/0").contains(A("255.255.255.255")));
  EXPECT_TRUE(P("::/0").contains(A("ffff::1")));
  EXPECT_EQ(P("128.0.0.0/1").last(), A("255.255.255.255"));
  EXPECT_EQ(P("8000::/1").last(), A("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
}

TEST(NetPrefix, HostBitsSetSuggestsTheNetwork) {
  std::string err;
  EXPECT_FALSE(parse_prefix("10.1.2.3/16", &err));
  EXPECT_NE(err.find("host bits"), std::string::npos) << err;
  EXPECT_NE(err.find("did you mean 10.1.0.0/16?"), std::string::npos) << err;

  err.clear();
  EXPECT_FALSE(parse_prefix("fd00:20::1/48", &err));
  EXPECT_NE(err.find("did you mean fd00:20::/48?"), std::string::npos) << err;

  err.clear();
  EXPECT_FALSE(parse_prefix("0.0.0.1/0", &err));
  EXPECT_NE(err.find("did you mean 0.0.0.0/0?"), std::string::npos) << err;

  err.clear();
  EXPECT_FALSE(parse_prefix("::1/127", &err));
  EXPECT_NE(err.find("did you mean ::/127?"), std::string::npos) << err;
}

TEST(NetPrefix, RejectsGarbage) {
  for (const char* bad : {"",
                          "/",
                          "/8",
                          "10.0.0.0/",
                          "10.0.0.0/33",
                          "fd00::/129",
                          "10.0.0.0/-1",
                          "10.0.0.0/+8",
                          "10.0.0.0/8x",
                          "10.0.0.0/ 8",
                          "10.0.0.0 /8",
                          " 10.0.0.0/8",
                          "10.0.0.0/8/8",
                          "10.0.0/8",
                          "10.0.0.256",
                          "300.0.0.0/8",
                          "example.com",
                          "fe80::1%1",
                          "fe80::%lo/64",
                          "::ffff:10.0.0.1",
                          "::ffff:10.0.0.0/104",
                          "10.0.0.0/4294967304",
                          "1.2.3.4.5",
                          "fd00:::1",
                          "10.0.0.0/08x"}) {
    std::string err;
    EXPECT_FALSE(parse_prefix(bad, &err)) << bad;
    EXPECT_FALSE(err.empty()) << bad;
  }
  EXPECT_FALSE(parse_prefix("junk"));  // no error pointer: still fails, no crash
}

TEST(NetPrefix, ErrorNamesTheInput) {
  std::string err;
  EXPECT_FALSE(parse_prefix("10.0.0.0/40", &err));
  EXPECT_NE(err.find("'10.0.0.0/40'"), std::string::npos) << err;
  EXPECT_NE(err.find("0-32"), std::string::npos) << err;
  EXPECT_FALSE(parse_prefix("fd00::/200", &err));
  EXPECT_NE(err.find("0-128"), std::string::npos) << err;
}

TEST(NetPrefix, ContainsAddress) {
  auto p = P("198.18.4.0/22");
  EXPECT_TRUE(p.contains(A("198.18.4.0")));
  EXPECT_TRUE(p.contains(A("198.18.7.255")));
  EXPECT_FALSE(p.contains(A("198.18.8.0")));
  EXPECT_FALSE(p.contains(A("198.18.3.255")));
  EXPECT_FALSE(p.contains(A("::c612:400")));  // same low bits, other family
  EXPECT_FALSE(p.contains(A("::ffff:198.18.4.1")));

  auto q = P("fd00:20::/48");
  EXPECT_TRUE(q.contains(A("fd00:20::")));
  EXPECT_TRUE(q.contains(A("fd00:20:0:ffff::1")));
  EXPECT_FALSE(q.contains(A("fd00:21::")));
  EXPECT_FALSE(q.contains(A("10.0.0.1")));
  EXPECT_FALSE(P("::/0").contains(A("10.0.0.1")));
  EXPECT_FALSE(P("0.0.0.0/0").contains(A("::1")));
}

TEST(NetPrefix, ContainsPrefix) {
  auto p = P("198.18.0.0/15");
  EXPECT_TRUE(p.contains(p));
  EXPECT_TRUE(p.contains(P("198.19.2.0/24")));
  EXPECT_TRUE(p.contains(P("198.19.2.1")));
  EXPECT_FALSE(p.contains(P("198.16.0.0/14")));  // wider
  EXPECT_FALSE(p.contains(P("198.20.0.0/16")));
  EXPECT_FALSE(P("198.19.2.0/24").contains(p));
  EXPECT_TRUE(P("::/0").contains(P("fd00::/8")));
  EXPECT_FALSE(P("::/0").contains(P("10.0.0.0/8")));
  EXPECT_FALSE(P("0.0.0.0/0").contains(P("::/0")));
}

TEST(NetPrefix, U128RoundTrip) {
  EXPECT_EQ(to_u128(A("0.0.0.1")), u128(1));
  EXPECT_EQ(to_u128(A("255.255.255.255")), u128(0xffffffffu));
  EXPECT_EQ(to_u128(A("::1")), u128(1));
  EXPECT_EQ(to_u128(A("8000::")), u128(1) << 127);
  EXPECT_EQ(from_u128(0xc6120001u, true), A("198.18.0.1"));
  EXPECT_EQ(from_u128(~u128(0), false), A("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
  for (const char* s : {"198.18.7.9", "fd00:20::abcd", "::", "0.0.0.0", "1:2:3:4:5:6:7:8"}) {
    auto a = A(s);
    EXPECT_EQ(from_u128(to_u128(a), a.is_v4()), a) << s;
  }
}

}  // namespace
}  // namespace tprosshy::net
