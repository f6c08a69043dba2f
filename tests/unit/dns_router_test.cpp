#include <gtest/gtest.h>

#include "dns/router.hpp"

namespace tprosshy::dns {
namespace {

TEST(DnsRouter, LongestSuffixAtLabelBoundaries) {
  router r;
  r.add("example.com", 0);
  r.add("corp.example.com", 1);
  EXPECT_EQ(r.match("example.com"), 0u);
  EXPECT_EQ(r.match("www.example.com"), 0u);
  EXPECT_EQ(r.match("corp.example.com"), 1u);
  EXPECT_EQ(r.match("a.b.corp.example.com"), 1u);
  EXPECT_EQ(r.match("xcorp.example.com"), 0u);  // not a label boundary
  EXPECT_EQ(r.match("notexample.com"), std::nullopt);
  EXPECT_EQ(r.match("com"), std::nullopt);
  EXPECT_EQ(r.match("."), std::nullopt);
}

TEST(DnsRouter, CatchAllCaseAndDots) {
  router r;
  r.add(".", 2);
  r.add("Corp.Example.COM.", 1);
  EXPECT_EQ(r.match("HOST.corp.example.com."), 1u);
  EXPECT_EQ(r.match("anything.org"), 2u);
  EXPECT_EQ(r.match("."), 2u);
  EXPECT_EQ(r.match("com"), 2u);
  r.add("corp.example.com", 3);  // the same domain again: the later one wins
  EXPECT_EQ(r.match("x.corp.example.com"), 3u);
}

TEST(DnsRouter, EmptyMatchesNothing) {
  router r;
  EXPECT_TRUE(r.empty());
  EXPECT_EQ(r.match("a.test"), std::nullopt);
}

}  // namespace
}  // namespace tprosshy::dns
