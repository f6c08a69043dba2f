#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>

#include "routing/table.hpp"

namespace tprosshy::routing {
namespace {

using namespace std::chrono_literals;
using net::u128;

net::prefix P(const char* text) {
  std::string err;
  auto p = net::parse_prefix(text, &err);
  if (!p) throw std::runtime_error(err);
  return *p;
}

net::address A(const char* text) { return boost::asio::ip::make_address(text); }

const clock::time_point t0 = clock::time_point{} + 1000s;

constexpr profile_id a = 1, b = 2, c = 3;

TEST(RoutingTable, EmptyTableRoutesNothing) {
  table t;
  EXPECT_EQ(t.lookup(A("198.18.0.1"), t0), std::nullopt);
  EXPECT_EQ(t.lookup(A("fd00::1"), t0), std::nullopt);
  EXPECT_TRUE(t.ranges(false).empty());
  EXPECT_TRUE(t.ranges(true).empty());
  EXPECT_TRUE(t.global_excludes().empty());
}

TEST(RoutingTable, LongestPrefixV4) {
  table t;
  t.add_subnet(P("198.18.0.0/15"), a);
  t.add_subnet(P("198.18.4.0/22"), b);
  t.add_subnet(P("198.18.5.128/25"), c);
  EXPECT_EQ(t.lookup(A("198.18.0.1"), t0), a);
  EXPECT_EQ(t.lookup(A("198.19.255.255"), t0), a);
  EXPECT_EQ(t.lookup(A("198.18.4.0"), t0), b);
  EXPECT_EQ(t.lookup(A("198.18.7.255"), t0), b);
  EXPECT_EQ(t.lookup(A("198.18.5.127"), t0), b);
  EXPECT_EQ(t.lookup(A("198.18.5.128"), t0), c);
  EXPECT_EQ(t.lookup(A("198.18.5.255"), t0), c);
  EXPECT_EQ(t.lookup(A("198.18.8.0"), t0), a);
  EXPECT_EQ(t.lookup(A("198.17.255.255"), t0), std::nullopt);
  EXPECT_EQ(t.lookup(A("198.20.0.0"), t0), std::nullopt);
}

TEST(RoutingTable, InsertionOrderDoesNotMatter) {
  table t;  // longest first, so the trie has to split and insert above existing nodes
  t.add_subnet(P("198.18.5.128/25"), c);
  t.add_subnet(P("198.18.4.0/22"), b);
  t.add_subnet(P("198.18.0.0/15"), a);
  t.add_subnet(P("198.18.6.0/24"), a);
  EXPECT_EQ(t.lookup(A("198.18.0.1"), t0), a);
  EXPECT_EQ(t.lookup(A("198.18.4.1"), t0), b);
  EXPECT_EQ(t.lookup(A("198.18.5.200"), t0), c);
  EXPECT_EQ(t.lookup(A("198.18.6.1"), t0), a);
  EXPECT_EQ(t.lookup(A("198.18.7.1"), t0), b);
}

TEST(RoutingTable, LongestPrefixV6) {
  table t;
  t.add_subnet(P("fd00::/8"), a);
  t.add_subnet(P("fd00:20::/48"), b);
  t.add_subnet(P("fd00:20:0:1::/64"), c);
  t.add_subnet(P("fd00:20:0:1::5/128"), a);
  EXPECT_EQ(t.lookup(A("fd12::1"), t0), a);
  EXPECT_EQ(t.lookup(A("fd00:20::1"), t0), b);
  EXPECT_EQ(t.lookup(A("fd00:20:0:1::4"), t0), c);
  EXPECT_EQ(t.lookup(A("fd00:20:0:1::5"), t0), a);
  EXPECT_EQ(t.lookup(A("fd00:20:0:1::6"), t0), c);
  EXPECT_EQ(t.lookup(A("fd00:20:0:2::1"), t0), b);
  EXPECT_EQ(t.lookup(A("fe80::1"), t0), std::nullopt);
  EXPECT_EQ(t.lookup(A("::1"), t0), std::nullopt);
}

TEST(RoutingTable, NestedProfilesAndHoles) {
  table t;
  t.add_subnet(P("198.19.0.0/16"), a);
  t.add_subnet(P("198.19.2.0/24"), b);
  EXPECT_EQ(t.lookup(A("198.19.1.1"), t0), a);
  EXPECT_EQ(t.lookup(A("198.19.2.1"), t0), b);
  EXPECT_EQ(t.lookup(A("198.19.3.1"), t0), a);

  // A's exclude punches a hole that goes direct...
  t.add_exclude(P("198.19.8.0/21"), a);
  EXPECT_EQ(t.lookup(A("198.19.8.1"), t0), std::nullopt);
  EXPECT_EQ(t.lookup(A("198.19.15.255"), t0), std::nullopt);
  EXPECT_EQ(t.lookup(A("198.19.7.255"), t0), a);
  EXPECT_EQ(t.lookup(A("198.19.16.0"), t0), a);
  // ...and another profile's longer subnet inside the hole wins there.
  t.add_subnet(P("198.19.9.0/24"), b);
  EXPECT_EQ(t.lookup(A("198.19.9.9"), t0), b);
  EXPECT_EQ(t.lookup(A("198.19.10.1"), t0), std::nullopt);
}

TEST(RoutingTable, SubnetBeatsExcludeOfEqualLength) {
  for (bool subnet_first : {true, false}) {
    table t;
    t.add_subnet(P("198.18.0.0/16"), a);
    if (subnet_first) t.add_subnet(P("198.18.1.0/24"), b);
    t.add_exclude(P("198.18.1.0/24"), a);
    if (!subnet_first) t.add_subnet(P("198.18.1.0/24"), b);
    EXPECT_EQ(t.lookup(A("198.18.1.7"), t0), b) << subnet_first;
    EXPECT_EQ(t.lookup(A("198.18.2.7"), t0), a) << subnet_first;
  }
}

TEST(RoutingTable, LaterSubnetReplacesSamePrefix) {
  table t;
  t.add_subnet(P("198.18.0.0/16"), a);
  t.add_subnet(P("198.18.0.0/16"), b);
  EXPECT_EQ(t.lookup(A("198.18.3.3"), t0), b);
  ASSERT_EQ(t.ranges(false).size(), 1u);
  EXPECT_EQ(t.ranges(false)[0].profile, b);
}

TEST(RoutingTable, GlobalExcludeBeatsEverything) {
  table t;
  t.add_subnet(P("198.18.0.0/15"), a);
  t.add_subnet(P("198.18.1.0/24"), b);
  t.add_subnet(P("198.18.1.5/32"), c);
  t.add_global_exclude(P("198.18.0.0/16"));
  t.learn(A("198.18.1.6"), c, t0 + 60s);
  t.learn(A("198.19.0.9"), c, t0 + 60s);
  EXPECT_EQ(t.lookup(A("198.18.1.5"), t0), std::nullopt);  // longer subnet
  EXPECT_EQ(t.lookup(A("198.18.1.6"), t0), std::nullopt);  // learned
  EXPECT_EQ(t.lookup(A("198.18.200.1"), t0), std::nullopt);
  EXPECT_EQ(t.lookup(A("198.19.0.1"), t0), a);
  EXPECT_EQ(t.lookup(A("198.19.0.9"), t0), c);
  ASSERT_EQ(t.global_excludes().size(), 1u);
  EXPECT_EQ(t.global_excludes()[0], P("198.18.0.0/16"));
}

TEST(RoutingTable, GlobalExcludeSharingASubnetPrefix) {
  table t;
  t.add_subnet(P("fd00:1::/32"), a);
  t.add_global_exclude(P("fd00:1::/32"));
  t.add_global_exclude(P("10.0.0.0/8"));
  EXPECT_EQ(t.lookup(A("fd00:1::1"), t0), std::nullopt);
  EXPECT_TRUE(t.ranges(true).empty());
  ASSERT_EQ(t.global_excludes().size(), 2u);
  EXPECT_EQ(t.global_excludes()[1], P("10.0.0.0/8"));
}

// dns.learn_limit: past it the address learned (or refreshed) longest ago goes, and the
// caller is told which, to take it out of the kernel's set too.
TEST(RoutingTable, LearnLimitPushesOutTheOldest) {
  table t;
  EXPECT_EQ(t.learn(A("198.18.0.1"), a, t0 + 60s, 3), std::nullopt);
  EXPECT_EQ(t.learn(A("198.18.0.2"), a, t0 + 60s, 3), std::nullopt);
  EXPECT_EQ(t.learn(A("fd00::3"), a, t0 + 60s, 3), std::nullopt);
  EXPECT_EQ(t.learn(A("198.18.0.9"), b, t0 + 60s, 3), std::nullopt);  // b counts its own
  EXPECT_EQ(t.learn(A("198.18.0.1"), a, t0 + 90s, 3), std::nullopt);  // a refresh: now newest
  EXPECT_EQ(t.learn(A("198.18.0.4"), a, t0 + 60s, 3), A("198.18.0.2"));
  EXPECT_EQ(t.lookup(A("198.18.0.2"), t0), std::nullopt);
  EXPECT_EQ(t.learn(A("198.18.0.5"), a, t0 + 60s, 3), A("fd00::3"));
  EXPECT_EQ(t.learn(A("198.18.0.6"), a, t0 + 60s, 3), A("198.18.0.1"));
  EXPECT_EQ(t.lookup(A("198.18.0.9"), t0), b);
  // An address that moves to another profile leaves its count; one that expired is not
  // pushed out again.
  EXPECT_EQ(t.learn(A("198.18.0.4"), b, t0 + 60s, 3), std::nullopt);
  EXPECT_EQ(t.learn(A("198.18.0.7"), a, t0 + 60s, 3), std::nullopt);
  EXPECT_EQ(t.expire(t0 + 61s), 5u);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(t.learn(A(("198.18.1." + std::to_string(i)).c_str()), a, t0 + 120s, 3), std::nullopt);
  EXPECT_EQ(t.learn(A("198.18.1.9"), a, t0 + 120s, 3), A("198.18.1.0"));
  // learned() lists them oldest first, as a reload carries them over.
  auto l = t.learned(t0 + 61s);
  ASSERT_EQ(l.size(), 3u);
  EXPECT_EQ(l.front().address, A("198.18.1.1"));
  EXPECT_EQ(l.back().address, A("198.18.1.9"));
}

TEST(RoutingTable, LearnedBeatsStaticAndExpires) {
  table t;
  t.add_subnet(P("198.18.0.0/16"), a);
  t.add_exclude(P("198.18.9.0/24"), a);
  t.learn(A("198.18.0.7"), b, t0 + 30s);
  t.learn(A("198.18.9.9"), b, t0 + 30s);
  t.learn(A("203.0.113.1"), c, t0 + 10s);
  t.learn(A("fd00::7"), c, t0 + 10s);

  EXPECT_EQ(t.lookup(A("198.18.0.7"), t0), b);
  EXPECT_EQ(t.lookup(A("198.18.0.8"), t0), a);
  EXPECT_EQ(t.lookup(A("198.18.9.9"), t0), b);  // inside an exclude: learned still wins
  EXPECT_EQ(t.lookup(A("198.18.9.10"), t0), std::nullopt);
  EXPECT_EQ(t.lookup(A("203.0.113.1"), t0), c);
  EXPECT_EQ(t.lookup(A("fd00::7"), t0 + 9s), c);
  // expiry <= now is dead, even before expire() runs
  EXPECT_EQ(t.lookup(A("fd00::7"), t0 + 10s), std::nullopt);
  EXPECT_EQ(t.lookup(A("198.18.0.7"), t0 + 30s), a);
  EXPECT_EQ(t.lookup(A("198.18.0.7"), t0 + 29s), b);

  // learned entries never show up in the static ranges
  auto r = t.ranges(false);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0], (range{A("198.18.0.0"), A("198.18.8.255"), a}));
  EXPECT_EQ(r[1], (range{A("198.18.10.0"), A("198.18.255.255"), a}));

  EXPECT_EQ(t.expire(t0), 0u);
  EXPECT_EQ(t.expire(t0 + 10s), 2u);
  EXPECT_EQ(t.expire(t0 + 10s), 0u);
  EXPECT_EQ(t.lookup(A("198.18.0.7"), t0 + 20s), b);
  EXPECT_EQ(t.expire(t0 + 31s), 2u);
  EXPECT_EQ(t.lookup(A("198.18.0.7"), t0), a);  // dropped for good, even for an earlier now
}

TEST(RoutingTable, RelearningUpdatesProfileAndExpiry) {
  table t;
  auto x = A("198.18.3.3");
  t.learn(x, a, t0 + 60s);
  t.learn(x, a, t0 + 10s);  // same profile: the later expiry stays
  EXPECT_EQ(t.lookup(x, t0 + 30s), a);
  t.learn(x, a, t0 + 90s);
  EXPECT_EQ(t.lookup(x, t0 + 80s), a);
  t.learn(x, b, t0 + 20s);  // another profile: it takes over with its own expiry
  EXPECT_EQ(t.lookup(x, t0 + 10s), b);
  EXPECT_EQ(t.lookup(x, t0 + 30s), std::nullopt);
  EXPECT_EQ(t.expire(t0 + 20s), 1u);
}

TEST(RoutingTable, V4MappedAddressesAreV4) {
  table t;
  t.add_subnet(P("198.18.0.0/16"), a);
  t.learn(A("::ffff:198.18.7.7"), b, t0 + 10s);
  EXPECT_EQ(t.lookup(A("::ffff:198.18.1.1"), t0), a);
  EXPECT_EQ(t.lookup(A("198.18.7.7"), t0), b);
  EXPECT_EQ(t.lookup(A("::ffff:198.18.7.7"), t0), b);
}

TEST(RoutingTable, FamiliesDoNotMix) {
  table t;
  t.add_subnet(P("0.0.0.0/0"), a);
  t.add_subnet(P("fd00::/8"), b);
  t.add_global_exclude(P("::/0"));
  t.learn(A("fd00::1"), c, t0 + 10s);
  // v4-compatible style v6 addresses share the low bits of v4 ones
  EXPECT_EQ(t.lookup(A("::c612:1"), t0), std::nullopt);
  EXPECT_EQ(t.lookup(A("fd00::1"), t0), std::nullopt);
  EXPECT_EQ(t.lookup(A("198.18.0.1"), t0), a);
  EXPECT_EQ(t.lookup(A("0.0.0.1"), t0), a);
  EXPECT_TRUE(t.ranges(true).empty());
  ASSERT_EQ(t.ranges(false).size(), 1u);

  table u;
  u.add_subnet(P("::/0"), a);
  u.add_exclude(P("0.0.0.0/0"), a);
  u.learn(A("0.0.0.1"), b, t0 + 10s);
  EXPECT_EQ(u.lookup(A("::1"), t0), a);
  EXPECT_EQ(u.lookup(A("::1:1"), t0), a);
  EXPECT_EQ(u.lookup(A("0.0.0.1"), t0), b);
  EXPECT_EQ(u.lookup(A("0.0.0.2"), t0), std::nullopt);
  EXPECT_TRUE(u.ranges(false).empty());
}

TEST(RoutingTable, DefaultRoutesReachTheMaxAddress) {
  table t;
  t.add_subnet(P("0.0.0.0/0"), a);
  t.add_subnet(P("::/0"), b);
  EXPECT_EQ(t.lookup(A("255.255.255.255"), t0), a);
  EXPECT_EQ(t.lookup(A("0.0.0.0"), t0), a);
  EXPECT_EQ(t.lookup(A("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), t0), b);
  EXPECT_EQ(t.ranges(false), (std::vector<range>{{A("0.0.0.0"), A("255.255.255.255"), a}}));
  EXPECT_EQ(t.ranges(true),
            (std::vector<range>{{A("::"), A("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), b}}));

  t.add_global_exclude(P("255.255.255.255/32"));
  t.add_exclude(P("0.0.0.0/32"), a);
  t.add_subnet(P("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0/124"), c);
  t.add_exclude(P("::/1"), b);
  EXPECT_EQ(t.ranges(false), (std::vector<range>{{A("0.0.0.1"), A("255.255.255.254"), a}}));
  EXPECT_EQ(t.ranges(true),
            (std::vector<range>{{A("8000::"), A("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffef"), b},
                                {A("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0"),
                                 A("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), c}}));
}

TEST(RoutingTable, RangesMergeAndSplit) {
  table t;
  // Two adjacent /24s of one profile and a /23 of the same profile nested in a /16 of it:
  // all one range.
  t.add_subnet(P("198.18.0.0/24"), a);
  t.add_subnet(P("198.18.1.0/24"), a);
  t.add_subnet(P("198.18.2.0/23"), a);
  EXPECT_EQ(t.ranges(false), (std::vector<range>{{A("198.18.0.0"), A("198.18.3.255"), a}}));

  t.add_subnet(P("198.19.0.0/16"), a);
  t.add_subnet(P("198.19.2.0/24"), b);
  t.add_exclude(P("198.19.8.0/21"), a);
  t.add_subnet(P("198.19.9.0/24"), b);
  t.add_subnet(P("198.19.10.0/24"), b);   // adjacent to the /24 above, same profile
  t.add_subnet(P("198.19.100.0/24"), a);  // same profile nested: no split
  EXPECT_EQ(t.ranges(false), (std::vector<range>{
                                 {A("198.18.0.0"), A("198.18.3.255"), a},
                                 {A("198.19.0.0"), A("198.19.1.255"), a},
                                 {A("198.19.2.0"), A("198.19.2.255"), b},
                                 {A("198.19.3.0"), A("198.19.7.255"), a},
                                 {A("198.19.9.0"), A("198.19.10.255"), b},
                                 {A("198.19.16.0"), A("198.19.255.255"), a},
                             }));
  // 198.18.3.255 and 198.19.0.0 are not adjacent; 198.18.255.255 + 1 is: merge across it.
  t.add_subnet(P("198.18.128.0/17"), a);
  auto r = t.ranges(false);
  ASSERT_EQ(r.size(), 6u);
  EXPECT_EQ(r[1], (range{A("198.18.128.0"), A("198.19.1.255"), a}));
}

TEST(RoutingTable, MoveKeepsContents) {
  table t;
  t.add_subnet(P("198.18.0.0/16"), a);
  t.add_global_exclude(P("198.18.1.0/24"));
  table u = std::move(t);
  EXPECT_EQ(u.lookup(A("198.18.0.1"), t0), a);
  EXPECT_EQ(u.lookup(A("198.18.1.1"), t0), std::nullopt);
  table v;
  v = std::move(u);
  EXPECT_EQ(v.global_excludes().size(), 1u);
}

// Randomized: the trie against a scan over every entry, and ranges() against lookup().
struct entry {
  enum kind_t { subnet, exclude, global } kind;
  net::prefix p;
  profile_id profile;
};

std::optional<profile_id> reference(const std::vector<entry>& es, const net::address& x) {
  int best = -1;
  for (const auto& e : es) {
    if (!e.p.contains(x)) continue;
    if (e.kind == entry::global) return std::nullopt;
    best = std::max(best, static_cast<int>(e.p.length));
  }
  // At the longest length a subnet beats an exclude, and a later subnet replaces an earlier.
  std::optional<profile_id> result;
  for (const auto& e : es)
    if (e.kind == entry::subnet && static_cast<int>(e.p.length) == best && e.p.contains(x))
      result = e.profile;
  return result;
}

class RoutingProperty : public ::testing::TestWithParam<bool> {};

TEST_P(RoutingProperty, MatchesBruteForce) {
  const bool v6 = GetParam();
  const unsigned width = v6 ? 128 : 32;
  const u128 max = v6 ? ~u128(0) : u128(0xffffffffu);
  std::mt19937_64 rng(v6 ? 4242 : 1717);
  auto rand128 = [&] { return (u128(rng()) << 64) | rng(); };
  auto mask = [&](unsigned len) { return len == 0 ? u128(0) : (max << (width - len)) & max; };
  auto addr = [&](u128 v) { return net::from_u128(v & max, !v6); };

  for (int round = 0; round < 20; ++round) {
    // A few anchors with nearby prefixes so that entries nest and overlap a lot.
    std::vector<u128> anchors;
    for (int i = 0; i < 4; ++i) anchors.push_back(rand128() & max);
    std::vector<entry> es;
    table t;
    int n = 20 + static_cast<int>(rng() % 60);
    for (int i = 0; i < n; ++i) {
      u128 base = anchors[rng() % anchors.size()];
      unsigned spread = static_cast<unsigned>(rng() % (width / 2 + 1));
      u128 v = base ^ (spread ? (rand128() & (max >> (width - spread))) : 0);
      unsigned len = rng() % 10 == 0 ? static_cast<unsigned>(rng() % (width / 2 + 1))
                                     : width / 2 + static_cast<unsigned>(rng() % (width / 2 + 1));
      net::prefix p{addr(v & mask(len)), len};
      auto kind_roll = rng() % 10;
      entry e{kind_roll < 6   ? entry::subnet
              : kind_roll < 9 ? entry::exclude
                              : entry::global,
              p, static_cast<profile_id>(rng() % 3)};
      es.push_back(e);
      if (e.kind == entry::subnet)
        t.add_subnet(p, e.profile);
      else if (e.kind == entry::exclude)
        t.add_exclude(p, e.profile);
      else
        t.add_global_exclude(p);
    }

    // Probe addresses: every prefix edge and its neighbours, plus random ones near anchors.
    std::vector<u128> probes;
    for (const auto& e : es) {
      u128 f = net::to_u128(e.p.first()), l = net::to_u128(e.p.last());
      for (u128 x : {f, l, f - 1, l + 1, f + (l - f) / 2}) probes.push_back(x & max);
    }
    for (int i = 0; i < 2000; ++i) {
      u128 base = anchors[rng() % anchors.size()];
      unsigned spread = static_cast<unsigned>(rng() % (width + 1));
      probes.push_back(base ^ (spread ? (rand128() & (max >> (width - spread))) : 0));
    }
    for (u128 x : probes) {
      auto got = t.lookup(addr(x), t0);
      ASSERT_EQ(got, reference(es, addr(x))) << "round " << round << " " << addr(x);
    }

    auto rs = t.ranges(v6);
    for (std::size_t i = 0; i < rs.size(); ++i) {
      const auto& r = rs[i];
      ASSERT_EQ(r.first.is_v6(), v6);
      u128 f = net::to_u128(r.first), l = net::to_u128(r.last);
      ASSERT_LE(f, l);
      if (i > 0) {
        u128 prev_last = net::to_u128(rs[i - 1].last);
        ASSERT_LT(prev_last, f);
        // touching ranges must differ in profile, or they would have been merged
        if (prev_last + 1 == f) {
          ASSERT_NE(rs[i - 1].profile, r.profile);
        }
      }
      for (u128 x : {f, l, f + (l - f) / 2}) ASSERT_EQ(reference(es, addr(x)), r.profile);
      if (f != 0) {
        ASSERT_NE(reference(es, addr(f - 1)), r.profile) << addr(f - 1);
      }
      if (l != max) {
        ASSERT_NE(reference(es, addr(l + 1)), r.profile) << addr(l + 1);
      }
    }
    // And the other way round: every probe routed by the reference lies in a range of its
    // profile, every unrouted one in none.
    for (u128 x : probes) {
      auto it = std::upper_bound(rs.begin(), rs.end(), x,
                                 [](u128 v, const range& r) { return v < net::to_u128(r.first); });
      std::optional<profile_id> in;
      if (it != rs.begin() && x <= net::to_u128(std::prev(it)->last)) in = std::prev(it)->profile;
      ASSERT_EQ(in, reference(es, addr(x))) << "round " << round << " " << addr(x);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Families, RoutingProperty, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "v6" : "v4"; });

TEST(RoutingTable, LearnedPropertyAgainstMap) {
  std::mt19937_64 rng(99);
  table t;
  t.add_subnet(P("198.18.0.0/15"), 0);
  t.add_global_exclude(P("198.18.128.0/17"));
  struct want {
    profile_id profile;
    clock::time_point expiry;
  };
  std::map<u128, want> ref;
  for (int i = 0; i < 5000; ++i) {
    u128 v = 0xc6120000u + rng() % 512;  // 198.18.0.0 + small offsets: many repeats
    profile_id p = rng() % 3;
    auto exp = t0 + std::chrono::seconds(rng() % 100);
    t.learn(net::from_u128(v, true), p, exp);
    auto [it, fresh] = ref.try_emplace(v, want{p, exp});
    if (!fresh) {
      if (it->second.profile == p)
        it->second.expiry = std::max(it->second.expiry, exp);
      else
        it->second = {p, exp};
    }
  }
  for (int s = 0; s <= 100; s += 7) {
    auto now = t0 + std::chrono::seconds(s);
    std::size_t dead = 0;
    for (auto& [v, w] : ref) {
      auto got = t.lookup(net::from_u128(v, true), now);
      ASSERT_EQ(got, w.expiry > now ? std::optional(w.profile) : std::optional<profile_id>(0));
    }
    for (auto it = ref.begin(); it != ref.end();)
      if (it->second.expiry <= now) {
        it = ref.erase(it);
        ++dead;
      } else {
        ++it;
      }
    EXPECT_EQ(t.expire(now), dead) << s;
  }
}

}  // namespace
}  // namespace tprosshy::routing
