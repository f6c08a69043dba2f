#include <gtest/gtest.h>

#include <vector>

#include "proxy/socks5.hpp"

namespace socks5 = tprosshy::proxy::socks5;
using boost::asio::ip::make_address;
using tcp = boost::asio::ip::tcp;
using bytes = std::vector<std::uint8_t>;

namespace {

socks5::answer parse(const bytes& b) { return socks5::parse_answer(b); }

// Method selection "no auth" followed by a reply head with the given REP and ATYP.
bytes head(std::uint8_t rep, std::uint8_t atyp) { return {5, 0, 5, rep, 0, atyp}; }

bytes cat(bytes a, const bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

TEST(Socks5Encode, Ipv4ConnectFollowsGreeting) {
  const auto out = socks5::encode_connect({make_address("198.18.99.5"), 80});
  const bytes want{5,   1,  0,              // greeting: one method, "no authentication"
                   5,   1,  0,  1,          // VER CMD=CONNECT RSV ATYP=IPv4
                   198, 18, 99, 5, 0, 80};  // address, port big-endian
  EXPECT_EQ(out, want);
}

TEST(Socks5Encode, Ipv6ConnectUsesAtyp4AndNetworkOrderPort) {
  const auto out = socks5::encode_connect({make_address("fd00:99::5"), 0x1bb});
  const bytes want{5,    1,    0,    5,    1, 0, 4,                             //
                   0xfd, 0x00, 0x00, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5,  //
                   0x01, 0xbb};
  EXPECT_EQ(out, want);
}

TEST(Socks5Parse, SuccessWithIpv4Bound) {
  const auto in = cat(head(0, 1), {127, 0, 0, 1, 0x1f, 0x90});
  const auto a = parse(in);
  ASSERT_EQ(a.state, socks5::status::ok);
  EXPECT_EQ(a.size, in.size());
  EXPECT_EQ(a.code, 0);
  EXPECT_EQ(a.bound, "127.0.0.1:8080");
}

TEST(Socks5Parse, SuccessWithIpv6AndDomainBound) {
  bytes v6 = head(0, 4);
  for (int i = 0; i < 15; ++i) v6.push_back(0);
  v6.push_back(1);
  v6.push_back(0);
  v6.push_back(22);
  auto a = parse(v6);
  ASSERT_EQ(a.state, socks5::status::ok);
  EXPECT_EQ(a.size, 24u);
  EXPECT_EQ(a.bound, "[::1]:22");

  const auto dom = cat(head(0, 3), {4, 'h', 'o', 's', 't', 1, 0});
  a = parse(dom);
  ASSERT_EQ(a.state, socks5::status::ok);
  EXPECT_EQ(a.size, dom.size());
  EXPECT_EQ(a.bound, "host:256");
}

TEST(Socks5Parse, AsksForExactlyTheBytesStillMissing) {
  EXPECT_EQ(parse({}).state, socks5::status::incomplete);
  EXPECT_EQ(parse({}).size, 7u);  // method selection + head + first address byte
  EXPECT_EQ(parse({5, 0}).size, 7u);
  const auto v4 = cat(head(0, 1), {10});
  EXPECT_EQ(parse(v4).state, socks5::status::incomplete);
  EXPECT_EQ(parse(v4).size, 12u);
  const auto v6 = cat(head(0, 4), {0});
  EXPECT_EQ(parse(v6).size, 24u);
  const auto dom = cat(head(0, 3), {10});
  EXPECT_EQ(parse(dom).size, 2u + 4u + 1u + 10u + 2u);
  // One byte short of complete is still incomplete.
  const auto short_v4 = cat(head(0, 1), {127, 0, 0, 1, 0});
  EXPECT_EQ(parse(short_v4).state, socks5::status::incomplete);
  EXPECT_EQ(parse(short_v4).size, 12u);
}

TEST(Socks5Parse, FailureCodesAreReportedAsSoonAsSeen) {
  for (std::uint8_t rep = 1; rep <= 8; ++rep) {
    const auto a = parse(head(rep, 1));  // the server may close before sending the address
    EXPECT_EQ(a.state, socks5::status::refused) << int(rep);
    EXPECT_EQ(a.code, rep);
  }
  EXPECT_EQ(parse(cat(head(5, 1), {0, 0, 0, 0, 0, 0})).code, 5);
  EXPECT_EQ(socks5::describe(5), "connection refused");
  EXPECT_EQ(socks5::describe(1), "general SOCKS server failure");
  EXPECT_EQ(socks5::describe(0x42), "unassigned reply code");
}

TEST(Socks5Parse, GarbageIsRejected) {
  EXPECT_EQ(parse({4}).state, socks5::status::malformed);        // SOCKS4 answer
  EXPECT_EQ(parse({5, 0xff}).state, socks5::status::malformed);  // no acceptable method
  EXPECT_EQ(parse({5, 2}).state, socks5::status::malformed);     // a method we never offered
  EXPECT_EQ(parse({5, 0, 4, 0, 0, 1}).state, socks5::status::malformed);    // reply version
  EXPECT_EQ(parse({5, 0, 5, 0, 1, 1}).state, socks5::status::malformed);    // reserved byte
  EXPECT_EQ(parse(cat(head(0, 2), {0})).state, socks5::status::malformed);  // unknown ATYP
  EXPECT_EQ(parse(cat(head(0, 9), {0})).state, socks5::status::malformed);
  // Extra bytes after a complete reply mean we would have eaten relayed data.
  EXPECT_EQ(parse(cat(head(0, 1), {1, 2, 3, 4, 0, 80, 'x'})).state, socks5::status::malformed);
  EXPECT_FALSE(parse({5, 0xff}).error.empty());
}
