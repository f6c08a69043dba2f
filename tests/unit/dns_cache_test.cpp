#include <gtest/gtest.h>

#include "dns/cache.hpp"

namespace tprosshy::dns {
namespace {

using namespace std::chrono_literals;

struct fake_clock {
  std::chrono::steady_clock::time_point t{std::chrono::hours(1000)};
  cache::clock fn() {
    return [this] { return t; };
  }
};

void put16(bytes& b, std::uint16_t v) {
  b.push_back(static_cast<std::uint8_t>(v >> 8));
  b.push_back(static_cast<std::uint8_t>(v));
}
void put32(bytes& b, std::uint32_t v) {
  put16(b, static_cast<std::uint16_t>(v >> 16));
  put16(b, static_cast<std::uint16_t>(v));
}

// An answer to (name, A) with one A record per TTL given.
bytes answer(std::string_view name, std::initializer_list<std::uint32_t> ttls) {
  bytes b = make_query(0x4242, name, rrtype::a);
  b[2] = 0x81, b[3] = 0x80;
  b[7] = static_cast<std::uint8_t>(ttls.size());
  std::uint8_t last = 1;
  for (auto ttl : ttls) {
    put16(b, 0xc00c);
    put16(b, rrtype::a);
    put16(b, 1);
    put32(b, ttl);
    put16(b, 4);
    b.insert(b.end(), {198, 18, 7, last++});
  }
  return b;
}

// NXDOMAIN with an SOA of the given TTL and MINIMUM.
bytes negative(std::string_view name, std::uint32_t ttl, std::uint32_t minimum) {
  bytes b = make_query(1, name, rrtype::a);
  b[2] = 0x81, b[3] = 0x83;
  b[9] = 1;
  put16(b, 0xc00c);
  put16(b, rrtype::soa);
  put16(b, 1);
  put32(b, ttl);
  put16(b, 2 + 2 + 20);
  put16(b, 0xc00c);
  put16(b, 0xc00c);
  for (std::uint32_t v : {1u, 2u, 3u, 4u}) put32(b, v);
  put32(b, minimum);
  return b;
}

question Q(std::string name, std::uint16_t type = rrtype::a) { return {std::move(name), type, 1}; }

TEST(DnsCache, ServesWithAgedTtlAndClientId) {
  fake_clock c;
  cache k(10, c.fn());
  ASSERT_TRUE(k.put(Q("a.test"), answer("a.test", {30, 100})));
  c.t += 10500ms;  // whole seconds only: 10
  auto got = k.get(Q("a.test"), 0x0707);
  ASSERT_TRUE(got);
  EXPECT_EQ(get_id(*got), 0x0707);
  auto m = parse(*got);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->answers[0].ttl, 20u);
  EXPECT_EQ(m->answers[1].ttl, 90u);
  EXPECT_EQ(m->code(), rcode::noerror);
}

TEST(DnsCache, ExpiresAtTheLeastTtl) {
  fake_clock c;
  cache k(10, c.fn());
  ASSERT_TRUE(k.put(Q("a.test"), answer("a.test", {100, 5})));
  c.t += 4s;
  auto got = k.get(Q("a.test"), 1);
  ASSERT_TRUE(got);
  EXPECT_EQ(parse(*got)->answers[1].ttl, 1u);
  c.t += 1s;
  EXPECT_FALSE(k.get(Q("a.test"), 1));
  EXPECT_EQ(k.size(), 0u);
}

TEST(DnsCache, NegativeBySoaMinimum) {
  fake_clock c;
  cache k(10, c.fn());
  ASSERT_TRUE(k.put(Q("no.test"), negative("no.test", 3600, 7)));
  c.t += 6s;
  auto got = k.get(Q("no.test"), 9);
  ASSERT_TRUE(got);
  EXPECT_EQ(parse(*got)->code(), rcode::nxdomain);
  EXPECT_EQ(parse(*got)->authority[0].ttl, 3600u - 6);
  c.t += 1s;
  EXPECT_FALSE(k.get(Q("no.test"), 9));
  // And by the SOA TTL when that is lower.
  ASSERT_TRUE(k.put(Q("no.test"), negative("no.test", 2, 900)));
  c.t += 2s;
  EXPECT_FALSE(k.get(Q("no.test"), 9));
}

TEST(DnsCache, SkipsUncacheable) {
  fake_clock c;
  cache k(10, c.fn());
  EXPECT_FALSE(k.put(Q("a.test"), make_reply(make_query(1, "a.test", 1), rcode::servfail)));
  EXPECT_FALSE(k.put(Q("a.test"), make_reply(make_query(1, "a.test", 1), rcode::nxdomain)));
  EXPECT_FALSE(k.put(Q("a.test"), answer("a.test", {0})));
  EXPECT_FALSE(k.put(Q("a.test"), bytes{1, 2, 3}));
  EXPECT_FALSE(k.put(Q("b.test"), answer("a.test", {60})));  // not the question asked
  EXPECT_EQ(k.size(), 0u);
  cache none(0, c.fn());
  EXPECT_FALSE(none.put(Q("a.test"), answer("a.test", {60})));
  EXPECT_FALSE(none.get(Q("a.test"), 1));
}

TEST(DnsCache, KeyIgnoresCaseButNotType) {
  fake_clock c;
  cache k(10, c.fn());
  ASSERT_TRUE(k.put(Q("Host.A.Test"), answer("host.a.test", {60})));
  EXPECT_TRUE(k.get(Q("HOST.a.test"), 1));
  EXPECT_FALSE(k.get(Q("host.a.test", rrtype::aaaa), 1));
  EXPECT_FALSE(k.get({"host.a.test", rrtype::a, 3}, 1));  // class CH
}

TEST(DnsCache, EvictsLeastRecentlyUsed) {
  fake_clock c;
  cache k(3, c.fn());
  for (auto n : {"1.test", "2.test", "3.test"}) ASSERT_TRUE(k.put(Q(n), answer(n, {60})));
  EXPECT_TRUE(k.get(Q("1.test"), 1));  // 2 is now the oldest
  ASSERT_TRUE(k.put(Q("4.test"), answer("4.test", {60})));
  EXPECT_EQ(k.size(), 3u);
  EXPECT_FALSE(k.get(Q("2.test"), 1));
  EXPECT_TRUE(k.get(Q("1.test"), 1));
  EXPECT_TRUE(k.get(Q("3.test"), 1));
  EXPECT_TRUE(k.get(Q("4.test"), 1));
  // Replacing an entry does not grow the cache.
  ASSERT_TRUE(k.put(Q("4.test"), answer("4.test", {30})));
  EXPECT_EQ(k.size(), 3u);
  EXPECT_EQ(parse(*k.get(Q("4.test"), 1))->answers[0].ttl, 30u);
}

}  // namespace
}  // namespace tprosshy::dns
