#include <gtest/gtest.h>

#include <initializer_list>

#include "dns/message.hpp"

namespace tprosshy::dns {
namespace {

// Builds messages byte by byte, so each test shows exactly what is on the wire.
struct wire {
  bytes b;
  wire& u8(std::uint8_t v) { return b.push_back(v), *this; }
  wire& u16(std::uint16_t v) { return u8(v >> 8).u8(v & 0xff); }
  wire& u32(std::uint32_t v) { return u16(v >> 16).u16(v & 0xffff); }
  wire& raw(std::initializer_list<std::uint8_t> v) { return b.insert(b.end(), v), *this; }
  wire& name(std::string_view n) {
    while (!n.empty()) {
      auto dot = n.find('.');
      auto l = n.substr(0, dot);
      u8(static_cast<std::uint8_t>(l.size()));
      b.insert(b.end(), l.begin(), l.end());
      n = dot == std::string_view::npos ? "" : n.substr(dot + 1);
    }
    return u8(0);
  }
  wire& labels(std::string_view n) {  // a name without its root: a pointer follows
    name(n);
    b.pop_back();
    return *this;
  }
  wire& ptr(std::uint16_t at) { return u16(0xc000 | at); }
  wire& header(std::uint16_t id, std::uint16_t flags, std::uint16_t qd, std::uint16_t an,
               std::uint16_t ns, std::uint16_t ar) {
    return u16(id).u16(flags).u16(qd).u16(an).u16(ns).u16(ar);
  }
};

// www.Example.com A: CNAME to web.example.com (compressed), then A and AAAA for it.
bytes good_answer(std::uint32_t ttl1 = 300, std::uint32_t ttl2 = 60) {
  wire w;
  w.header(0x1234, 0x8180, 1, 3, 0, 1);
  w.name("www.Example.com").u16(rrtype::a).u16(1);  // name at 12; "Example.com" at 16
  w.ptr(12).u16(rrtype::cname).u16(1).u32(ttl1).u16(6).u8(3).raw({'w', 'e', 'b'}).ptr(16);
  const std::uint16_t web = 12 + 17 + 4 + 12;  // the "web" label just written
  w.ptr(web).u16(rrtype::a).u16(1).u32(ttl2).u16(4).raw({198, 18, 50, 1});
  w.ptr(web).u16(rrtype::aaaa).u16(1).u32(ttl1).u16(16);
  w.raw({0xfd, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1});
  w.u8(0).u16(rrtype::opt).u16(1232).u32(0).u16(0);
  return w.b;
}

bytes nxdomain(std::uint32_t soa_ttl, std::uint32_t minimum) {
  wire w;
  w.header(7, 0x8183, 1, 0, 1, 0);
  w.name("nope.example.com").u16(rrtype::a).u16(1);
  w.ptr(17).u16(rrtype::soa).u16(1).u32(soa_ttl);
  const auto rdlen_at = w.b.size();
  w.u16(0).labels("ns1").ptr(17).labels("hostmaster").ptr(17);
  w.u32(1).u32(2).u32(3).u32(4).u32(minimum);
  const auto rdlen = w.b.size() - rdlen_at - 2;
  w.b[rdlen_at] = 0, w.b[rdlen_at + 1] = static_cast<std::uint8_t>(rdlen);
  return w.b;
}

std::uint32_t ttl_at(const bytes& m, std::size_t i) { return parse(m)->answers.at(i).ttl; }

TEST(DnsMessage, ParsesAnswerWithCompression) {
  const auto b = good_answer();
  std::string why;
  const auto m = parse(b, &why);
  ASSERT_TRUE(m) << why;
  EXPECT_EQ(m->head.id, 0x1234);
  EXPECT_TRUE(m->head.qr());
  EXPECT_EQ(m->code(), rcode::noerror);
  ASSERT_EQ(m->questions.size(), 1u);
  EXPECT_EQ(m->questions[0].name, "www.Example.com");
  EXPECT_EQ(m->questions[0].type, rrtype::a);
  EXPECT_EQ(m->question_end, 12u + 17 + 4);
  ASSERT_EQ(m->answers.size(), 3u);
  EXPECT_EQ(m->answers[0].name, "www.Example.com");
  EXPECT_EQ(m->answers[0].type, rrtype::cname);
  EXPECT_EQ(m->answers[1].name, "web.Example.com");
  EXPECT_EQ(*m->answers[1].address, boost::asio::ip::make_address("198.18.50.1"));
  EXPECT_EQ(m->answers[1].ttl, 60u);
  EXPECT_EQ(*m->answers[2].address, boost::asio::ip::make_address("fd00:20::1"));
  ASSERT_TRUE(m->edns_size);
  EXPECT_EQ(*m->edns_size, 1232);
  EXPECT_EQ(udp_limit(*m), 1232u);
}

TEST(DnsMessage, RootAndEscapedNames) {
  wire w;
  w.header(1, 0, 1, 0, 0, 0).u8(0).u16(rrtype::ns).u16(1);
  EXPECT_EQ(parse(w.b)->questions[0].name, ".");
  wire x;
  x.header(1, 0, 1, 0, 0, 0).u8(3).raw({'a', '.', 0}).name("b").u16(1).u16(1);
  // A dot inside a label is escaped, so it can never pass for a label boundary.
  EXPECT_EQ(parse(x.b)->questions[0].name, "a\\046\\000.b");
}

TEST(DnsMessage, QueryBuilderRoundTrips) {
  const auto q = make_query(99, "host7.a.test", rrtype::aaaa);
  const auto m = parse(q);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->head.id, 99);
  EXPECT_FALSE(m->head.qr());
  EXPECT_EQ(m->questions[0].name, "host7.a.test");
  EXPECT_EQ(m->questions[0].type, rrtype::aaaa);
  EXPECT_EQ(udp_limit(*m), 512u);
}

TEST(DnsMessage, RejectsEveryMalformedClass) {
  std::vector<std::pair<const char*, bytes>> bad;
  bad.push_back({"empty", {}});
  bad.push_back({"short header", {0, 1, 0, 0, 0, 1, 0}});
  {
    wire w;  // question count says 1, nothing follows
    w.header(1, 0, 1, 0, 0, 0);
    bad.push_back({"missing question", w.b});
  }
  {
    wire w;
    w.header(1, 0, 1, 0, 0, 0).u8(10).raw({'a', 'b'});
    bad.push_back({"label past end", w.b});
  }
  {
    wire w;
    w.header(1, 0, 1, 0, 0, 0).name("a.test");
    bad.push_back({"question without type", w.b});
  }
  {
    wire w;  // pointer to itself
    w.header(1, 0, 1, 0, 0, 0).ptr(12).u16(1).u16(1);
    bad.push_back({"self pointer", w.b});
  }
  {
    wire w;  // two names pointing at each other: forward pointer
    w.header(1, 0, 2, 0, 0, 0).ptr(18).u16(1).u16(1).ptr(12).u16(1).u16(1);
    bad.push_back({"pointer loop", w.b});
  }
  {
    wire w;
    w.header(1, 0, 1, 0, 0, 0).ptr(2).u16(1).u16(1);
    bad.push_back({"pointer into header", w.b});
  }
  {
    wire w;
    w.header(1, 0, 1, 0, 0, 0).u8(0xc0);
    bad.push_back({"half pointer", w.b});
  }
  {
    wire w;
    w.header(1, 0, 1, 0, 0, 0).u8(0x41).u8(0).u16(1).u16(1);
    bad.push_back({"extended label type", w.b});
  }
  {
    wire w;  // 5 labels of 63 = 320 bytes > 255
    w.header(1, 0, 1, 0, 0, 0);
    for (int i = 0; i < 5; ++i) {
      w.u8(63);
      for (int j = 0; j < 63; ++j) w.u8('x');
    }
    w.u8(0).u16(1).u16(1);
    bad.push_back({"name too long", w.b});
  }
  {
    wire w;  // long name via pointers: each pointer adds labels
    w.header(1, 0, 5, 0, 0, 0);
    std::uint16_t prev = 0;
    for (int i = 0; i < 5; ++i) {
      const auto at = static_cast<std::uint16_t>(w.b.size());
      w.u8(63);
      for (int j = 0; j < 63; ++j) w.u8('y');
      if (prev)
        w.ptr(prev);
      else
        w.u8(0);
      w.u16(1).u16(1);
      prev = at;
    }
    bad.push_back({"name too long through pointers", w.b});
  }
  {
    auto b = good_answer();
    b.resize(b.size() - 3);
    bad.push_back({"truncated record", b});
  }
  {
    wire w;
    w.header(1, 0x8180, 1, 1, 0, 0).name("a.test").u16(1).u16(1);
    w.ptr(12).u16(rrtype::a).u16(1).u32(5).u16(5).raw({1, 2, 3, 4, 5});
    bad.push_back({"A of 5 bytes", w.b});
  }
  {
    wire w;
    w.header(1, 0x8180, 1, 1, 0, 0).name("a.test").u16(1).u16(1);
    w.ptr(12).u16(16).u16(1).u32(5).u16(40).raw({1, 2});
    bad.push_back({"rdata past end", w.b});
  }
  {
    wire w;
    w.header(1, 0x8180, 1, 1, 0, 0).name("a.test").u16(1).u16(1);
    w.u8(0).u16(rrtype::opt).u16(512).u32(0).u16(0);
    bad.push_back({"OPT in answers", w.b});
  }
  {
    wire w;
    w.header(1, 0, 1, 0, 0, 2).name("a.test").u16(1).u16(1);
    w.u8(0).u16(rrtype::opt).u16(512).u32(0).u16(0);
    w.u8(0).u16(rrtype::opt).u16(512).u32(0).u16(0);
    bad.push_back({"two OPTs", w.b});
  }
  {
    auto b = nxdomain(100, 50);
    b[b.size() - 40] = 38;  // SOA rdlength one short: MINIMUM falls outside
    bad.push_back({"short SOA", b});
  }
  for (const auto& [what, b] : bad) {
    std::string why;
    EXPECT_FALSE(parse(b, &why)) << what;
    EXPECT_FALSE(why.empty()) << what;
    bytes copy = b;
    EXPECT_FALSE(age_ttls(copy, 1)) << what;
    EXPECT_EQ(copy, b) << what;
    EXPECT_FALSE(truncate(b)) << what;
  }
}

TEST(DnsMessage, AgesEveryTtlButOpt) {
  auto b = good_answer(300, 60);
  const auto before = b;
  ASSERT_TRUE(age_ttls(b, 100));
  EXPECT_EQ(ttl_at(b, 0), 200u);
  EXPECT_EQ(ttl_at(b, 1), 0u);  // never below zero
  EXPECT_EQ(ttl_at(b, 2), 200u);
  // The OPT "TTL" holds EDNS flags: untouched, like every other byte.
  EXPECT_EQ(b.size(), before.size());
  EXPECT_TRUE(std::equal(b.end() - 11, b.end(), before.end() - 11));
  auto m = parse(b);
  ASSERT_TRUE(m);
  EXPECT_EQ(*m->edns_size, 1232);
}

TEST(DnsMessage, CacheTtl) {
  EXPECT_EQ(cache_ttl(*parse(good_answer(300, 60))), 60u);
  EXPECT_EQ(cache_ttl(*parse(nxdomain(900, 30))), 30u);  // RFC 2308: min(TTL, MINIMUM)
  EXPECT_EQ(cache_ttl(*parse(nxdomain(20, 3600))), 20u);
  auto nodata = nxdomain(100, 40);
  nodata[3] = 0x80;  // NOERROR with no answers: NODATA
  EXPECT_EQ(cache_ttl(*parse(nodata)), 40u);
  auto nosoa = make_reply(make_query(1, "x.test", 1), rcode::nxdomain);
  EXPECT_FALSE(cache_ttl(*parse(nosoa)));
  auto fail = make_reply(make_query(1, "x.test", 1), rcode::servfail);
  EXPECT_FALSE(cache_ttl(*parse(fail)));
  auto tc = good_answer();
  tc[2] |= 0x02;
  EXPECT_FALSE(cache_ttl(*parse(tc)));
}

TEST(DnsMessage, ReplyEchoesIdAndQuestion) {
  auto q = make_query(0xbeef, "Host.A.test", rrtype::aaaa);
  for (auto code : {rcode::servfail, rcode::formerr, rcode::refused}) {
    const auto r = make_reply(q, code);
    const auto m = parse(r);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->head.id, 0xbeef);
    EXPECT_TRUE(m->head.qr());
    EXPECT_EQ(m->code(), code);
    EXPECT_TRUE(m->head.flags & 0x0100);  // RD echoed
    ASSERT_EQ(m->questions.size(), 1u);
    EXPECT_EQ(m->questions[0].name, "Host.A.test");
    EXPECT_EQ(m->questions[0].type, rrtype::aaaa);
    EXPECT_TRUE(m->answers.empty());
  }
  // A header and garbage: still a reply, without a question.
  bytes junk = {0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0};
  const auto r = make_reply(junk, rcode::formerr);
  ASSERT_EQ(r.size(), header_size);
  EXPECT_EQ(get_id(r), 0xabcd);
  EXPECT_EQ(parse(r)->questions.size(), 0u);
  EXPECT_EQ(parse(r)->code(), rcode::formerr);
  EXPECT_TRUE(make_reply(bytes{1, 2, 3}, rcode::formerr).empty());
}

TEST(DnsMessage, TruncateKeepsHeaderAndQuestion) {
  const auto b = good_answer();
  const auto t = truncate(b);
  ASSERT_TRUE(t);
  const auto m = parse(*t);
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->head.tc());
  EXPECT_EQ(m->head.id, 0x1234);
  EXPECT_EQ(m->questions[0].name, "www.Example.com");
  EXPECT_TRUE(m->answers.empty() && m->authority.empty() && m->additional.empty());
  EXPECT_EQ(t->size(), parse(b)->question_end);
}

TEST(DnsMessage, StripOptAndCopyQuestion) {
  auto b = good_answer();
  ASSERT_TRUE(strip_opt(b));
  auto m = parse(b);
  ASSERT_TRUE(m);
  EXPECT_FALSE(m->edns_size);
  EXPECT_EQ(m->answers.size(), 3u);
  EXPECT_FALSE(strip_opt(b));

  auto q = make_query(5, "WWW.EXAMPLE.COM", rrtype::a);
  auto a = good_answer();
  copy_question(a, q);
  EXPECT_EQ(parse(a)->questions[0].name, "WWW.EXAMPLE.COM");
  EXPECT_EQ(parse(a)->answers[1].name, "web.EXAMPLE.COM");  // pointers follow the copy
  auto other = make_query(5, "xxx.example.com", rrtype::a);
  copy_question(a, other);  // a different name: left alone
  EXPECT_EQ(parse(a)->questions[0].name, "WWW.EXAMPLE.COM");
}

TEST(DnsMessage, IdHelpers) {
  auto q = make_query(1, "a.test", 1);
  set_id(q, 0xfffe);
  EXPECT_EQ(get_id(q), 0xfffe);
  EXPECT_EQ(parse(q)->head.id, 0xfffe);
}

}  // namespace
}  // namespace tprosshy::dns
