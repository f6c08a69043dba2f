#include "helper/protocol.hpp"

#include <algorithm>
#include <boost/endian/conversion.hpp>
#include <set>

namespace tprosshy::helper {

namespace endian = boost::endian;

namespace {

class writer {
 public:
  writer(type t) : out_(4) { u8(static_cast<uint8_t>(t)); }

  void u8(uint8_t v) { out_.push_back(v); }
  void u16(uint16_t v) {
    put<2>([&](unsigned char* p) { endian::store_big_u16(p, v); });
  }
  void u32(uint32_t v) {
    put<4>([&](unsigned char* p) { endian::store_big_u32(p, v); });
  }
  void u64(uint64_t v) {
    put<8>([&](unsigned char* p) { endian::store_big_u64(p, v); });
  }
  void str(const std::string& s) {
    if (s.size() > 0xffff) throw bad_message("a string of " + std::to_string(s.size()) + " bytes");
    u16(static_cast<uint16_t>(s.size()));
    out_.insert(out_.end(), s.begin(), s.end());
  }
  void count(std::size_t n) {
    if (n > 0xffffffffu) throw bad_message("a vector of " + std::to_string(n) + " elements");
    u32(static_cast<uint32_t>(n));
  }
  void addr(const net::address& a) {
    if (a.is_v4()) {
      u8(4);
      auto b = a.to_v4().to_bytes();
      out_.insert(out_.end(), b.begin(), b.end());
    } else {
      u8(6);
      auto b = a.to_v6().to_bytes();
      out_.insert(out_.end(), b.begin(), b.end());
    }
  }
  std::vector<uint8_t> done() {
    endian::store_big_u32(out_.data(), static_cast<uint32_t>(out_.size() - 4));
    return std::move(out_);
  }

 private:
  template <std::size_t N, class F>
  void put(F f) {
    out_.resize(out_.size() + N);
    f(out_.data() + out_.size() - N);
  }
  std::vector<uint8_t> out_;
};

void write_ruleset(writer& w, const nft::ruleset& r) {
  w.str(r.table);
  w.u32(r.mark);
  w.u8(r.output);
  w.count(r.interfaces.size());
  for (const auto& i : r.interfaces) w.str(i);
  w.u16(r.tcp_port);
  w.u8(r.capture_dns);
  w.u16(r.dns_port);
  w.u8(r.capture_all_dns);
  w.count(r.resolvers.size());
  for (const auto& a : r.resolvers) w.addr(a);
  w.count(r.bypass.size());
  for (const auto& e : r.bypass) {
    w.addr(e.address);
    w.u16(e.port);
    w.str(e.profile);
  }
  w.count(r.exclude.size());
  for (const auto& p : r.exclude) {
    w.addr(p.network);
    w.u8(static_cast<uint8_t>(p.length));
  }
  w.count(r.profiles.size());
  for (const auto& p : r.profiles) {
    w.str(p.name);
    for (const auto* v : {&p.v4, &p.v6}) {
      w.count(v->size());
      for (const auto& g : *v) {
        w.addr(g.first);
        w.addr(g.last);
      }
    }
    w.u8(p.learned);
    w.count(p.known.size());
    for (const auto& k : p.known) {
      w.addr(k.address);
      w.u32(static_cast<uint32_t>(std::clamp<int64_t>(k.ttl.count(), 0, 0xffffffff)));
    }
    w.u8(p.refuse_other);
  }
  w.u8(r.skuid.has_value());
  w.u32(r.skuid.value_or(0));
  w.u8(static_cast<uint8_t>(r.lock));
}

// Reads one frame body; every error names the message and the field.
class reader {
 public:
  reader(std::span<const uint8_t> in, std::string msg) : in_(in), msg_(std::move(msg)) {}

  [[noreturn]] void fail(const std::string& field, const std::string& why) const {
    throw bad_message(msg_ + ": " + field + ": " + why);
  }
  void need(std::size_t n, const std::string& field) const {
    if (in_.size() - at_ < n)
      fail(field, "truncated at byte " + std::to_string(at_) + " (" + std::to_string(n) +
                      " more bytes needed, " + std::to_string(in_.size() - at_) + " left)");
  }
  uint8_t u8(const std::string& field) {
    need(1, field);
    return in_[at_++];
  }
  uint16_t u16(const std::string& field) {
    need(2, field);
    at_ += 2;
    return endian::load_big_u16(in_.data() + at_ - 2);
  }
  uint32_t u32(const std::string& field) {
    need(4, field);
    at_ += 4;
    return endian::load_big_u32(in_.data() + at_ - 4);
  }
  uint64_t u64(const std::string& field) {
    need(8, field);
    at_ += 8;
    return endian::load_big_u64(in_.data() + at_ - 8);
  }
  bool flag(const std::string& field) {
    auto v = u8(field);
    if (v > 1) fail(field, "a flag of " + std::to_string(v) + ", not 0 or 1");
    return v == 1;
  }
  std::string str(const std::string& field, std::size_t limit) {
    auto n = u16(field);
    if (n > limit) fail(field, std::to_string(n) + " bytes, limit " + std::to_string(limit));
    need(n, field);
    std::string s(reinterpret_cast<const char*>(in_.data() + at_), n);
    at_ += n;
    return s;
  }
  // A count checked against its limit before anything is allocated for it.
  uint32_t count(const std::string& field, std::size_t limit, const char* what) {
    auto n = u32(field);
    if (n > limit) fail(field, std::to_string(n) + " " + what + ", limit " + std::to_string(limit));
    return n;
  }
  net::address addr(const std::string& field) {
    auto f = u8(field);
    if (f == 4) {
      need(4, field);
      boost::asio::ip::address_v4::bytes_type b;
      std::copy_n(in_.data() + at_, 4, b.begin());
      at_ += 4;
      return boost::asio::ip::address_v4(b);
    }
    if (f == 6) {
      need(16, field);
      boost::asio::ip::address_v6::bytes_type b;
      std::copy_n(in_.data() + at_, 16, b.begin());
      at_ += 16;
      return boost::asio::ip::address_v6(b);
    }
    fail(field, "address family " + std::to_string(f) + ", not 4 or 6");
  }
  void end() const {
    if (at_ != in_.size())
      fail("end", std::to_string(in_.size() - at_) + " bytes after the end of the message");
  }

 private:
  std::span<const uint8_t> in_;
  std::size_t at_ = 0;
  std::string msg_;
};

bool name_chars(const std::string& s, bool dash) {
  return !s.empty() && s.size() <= limits::name && std::all_of(s.begin(), s.end(), [&](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || (dash && c == '-');
  });
}

bool valid_ifname(const std::string& s) {
  return !s.empty() && s.size() <= limits::ifname && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.' || c == '@' || c == ':';
  });
}

std::string idx(const std::string& field, std::size_t i) {
  return field + "[" + std::to_string(i) + "]";
}

void check_port(reader& in, const std::string& field, uint16_t port) {
  if (port == 0) in.fail(field, "port 0, must be 1-65535 where traffic is redirected");
}

nft::ruleset read_ruleset(reader& in) {
  nft::ruleset r;
  r.table = in.str("table", limits::string);
  if (!valid_table_name(r.table)) in.fail("table", "'" + r.table + "' is not [a-z0-9_]{1,32}");
  r.mark = in.u32("mark");
  r.output = in.flag("output");
  auto n = in.count("interfaces", limits::interfaces, "interfaces");
  for (uint32_t i = 0; i < n; ++i) {
    auto f = idx("interfaces", i);
    r.interfaces.push_back(in.str(f, limits::string));
    if (!valid_ifname(r.interfaces.back()))
      in.fail(f, "'" + r.interfaces.back() + "' is not an interface name of 1-15 characters");
  }
  r.tcp_port = in.u16("tcp_port");
  r.capture_dns = in.flag("capture_dns");
  r.dns_port = in.u16("dns_port");
  r.capture_all_dns = in.flag("capture_all_dns");
  if (r.capture_dns) check_port(in, "dns_port", r.dns_port);
  n = in.count("resolvers", limits::resolvers, "addresses");
  for (uint32_t i = 0; i < n; ++i) r.resolvers.push_back(in.addr(idx("resolvers", i)));
  n = in.count("bypass", limits::bypass, "endpoints");
  for (uint32_t i = 0; i < n; ++i) {
    auto f = idx("bypass", i);
    nft::endpoint e;
    e.address = in.addr(f + ".address");
    e.port = in.u16(f + ".port");
    if (e.port == 0) in.fail(f + ".port", "port 0");
    e.profile = in.str(f + ".profile", limits::string);
    if (!valid_profile_name(e.profile))
      in.fail(f + ".profile", "'" + e.profile + "' is not [a-z0-9_-]{1,32}");
    r.bypass.push_back(std::move(e));
  }
  std::size_t ranges = 0;
  auto add_ranges = [&](const std::string& f, uint32_t k) {
    ranges += k;
    if (ranges > limits::ranges)
      in.fail(f, std::to_string(ranges) + " ranges in the ruleset so far, limit " +
                     std::to_string(limits::ranges) + " in total");
  };
  n = in.count("exclude", limits::ranges, "prefixes");
  add_ranges("exclude", n);
  for (uint32_t i = 0; i < n; ++i) {
    auto f = idx("exclude", i);
    net::prefix p{in.addr(f), in.u8(f + ".length")};
    if (p.length > p.max_length())
      in.fail(f, "prefix length " + std::to_string(p.length) + " of an IPv" +
                     (p.is_v4() ? "4" : "6") + " address");
    const unsigned host_bits = p.max_length() - p.length;  // < 128 unless length is 0
    const net::u128 host = host_bits == 128 ? ~net::u128(0) : (net::u128(1) << host_bits) - 1;
    if (net::to_u128(p.network) & host)
      in.fail(f, p.network.to_string() + "/" + std::to_string(p.length) + " has host bits set");
    r.exclude.push_back(p);
  }
  n = in.count("profiles", limits::profiles, "profiles");
  std::set<std::string> names;
  for (uint32_t i = 0; i < n; ++i) {
    auto f = idx("profiles", i);
    nft::profile_routes p;
    p.name = in.str(f + ".name", limits::string);
    if (!valid_profile_name(p.name))
      in.fail(f + ".name", "'" + p.name + "' is not [a-z0-9_-]{1,32}");
    if (!names.insert(p.name).second) in.fail(f + ".name", "'" + p.name + "' appears twice");
    for (bool v4 : {true, false}) {
      auto vf = f + (v4 ? ".v4" : ".v6");
      auto k = in.count(vf, limits::ranges, "ranges");
      add_ranges(vf, k);
      auto& v = v4 ? p.v4 : p.v6;
      for (uint32_t j = 0; j < k; ++j) {
        auto rf = idx(vf, j);
        nft::addr_range g{in.addr(rf + ".first"), in.addr(rf + ".last")};
        if (g.first.is_v4() != v4 || g.last.is_v4() != v4)
          in.fail(rf, std::string("not an IPv") + (v4 ? "4" : "6") + " range");
        if (net::to_u128(g.last) < net::to_u128(g.first))
          in.fail(rf, g.first.to_string() + " comes after " + g.last.to_string());
        v.push_back(g);
      }
    }
    p.learned = in.flag(f + ".learned");
    auto k = in.count(f + ".known", limits::learned, "addresses");
    if (k > 0 && !p.learned) in.fail(f + ".known", "addresses learned without learned sets");
    for (uint32_t j = 0; j < k; ++j) {
      auto kf = idx(f + ".known", j);
      nft::learned_address a{in.addr(kf + ".address"), {}};
      auto ttl = in.u32(kf + ".ttl");
      if (ttl > limits::ttl)
        in.fail(kf + ".ttl", std::to_string(ttl) + " s, limit " + std::to_string(limits::ttl));
      a.ttl = std::chrono::seconds(ttl);
      p.known.push_back(a);
    }
    p.refuse_other = in.flag(f + ".refuse_other");
    r.profiles.push_back(std::move(p));
  }
  bool has_uid = in.flag("skuid");
  auto uid = in.u32("skuid");
  if (has_uid) r.skuid = uid;
  const auto lock = in.u8("lock");
  if (lock > static_cast<uint8_t>(nft::lock_mode::off))
    in.fail("lock", std::to_string(lock) + " is not 0 (leave), 1 (on) or 2 (off)");
  r.lock = static_cast<nft::lock_mode>(lock);
  bool redirects = std::any_of(r.profiles.begin(), r.profiles.end(), [](const auto& p) {
    return p.learned || !p.v4.empty() || !p.v6.empty();
  });
  if (redirects) check_port(in, "tcp_port", r.tcp_port);
  return r;
}

const char* type_name(uint8_t t) {
  switch (static_cast<type>(t)) {
    case type::hello:
      return "hello";
    case type::install:
      return "install";
    case type::learn:
      return "learn";
    case type::remove:
      return "remove";
    case type::socket:
      return "socket";
    case type::lifeline:
      return "lifeline";
    case type::refused:
      return "refused";
    case type::counts:
      return "counts";
    case type::ok:
      return "ok";
    case type::error:
      return "error";
  }
  return "message";
}

}  // namespace

bool valid_profile_name(const std::string& s) { return name_chars(s, true); }
bool valid_table_name(const std::string& s) { return name_chars(s, false); }

std::vector<uint8_t> encode(const request& r) {
  return std::visit(
      [](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, hello>) {
          writer w(type::hello);
          w.u32(m.version);
          return w.done();
        } else if constexpr (std::is_same_v<T, install>) {
          writer w(type::install);
          write_ruleset(w, m.rules);
          return w.done();
        } else if constexpr (std::is_same_v<T, learn>) {
          writer w(type::learn);
          w.str(m.profile);
          w.addr(m.address);
          w.u32(m.ttl);
          w.u8(m.forget.has_value());
          if (m.forget) w.addr(*m.forget);
          return w.done();
        } else if constexpr (std::is_same_v<T, remove>) {
          return writer(type::remove).done();
        } else if constexpr (std::is_same_v<T, lifeline>) {
          return writer(type::lifeline).done();
        } else if constexpr (std::is_same_v<T, refused>) {
          return writer(type::refused).done();
        } else {
          writer w(type::socket);
          w.u8(m.family);
          w.u8(static_cast<uint8_t>(m.kind));
          return w.done();
        }
      },
      r);
}

std::vector<uint8_t> encode(const reply& r) {
  if (std::holds_alternative<ok>(r)) return writer(type::ok).done();
  if (const auto* c = std::get_if<counts>(&r)) {
    writer w(type::counts);
    w.count(c->packets.size());
    for (const auto& [profile, n] : c->packets) {
      w.str(profile);
      w.u64(n);
    }
    return w.done();
  }
  const auto& e = std::get<error>(r);
  writer w(type::error);
  w.u32(static_cast<uint32_t>(e.code));
  w.str(e.message);
  return w.done();
}

uint32_t frame_length(std::span<const uint8_t, 4> prefix) {
  auto n = endian::load_big_u32(prefix.data());
  if (n == 0) throw bad_message("frame: empty (no type)");
  if (n > limits::frame)
    throw bad_message("frame: " + std::to_string(n) + " bytes, limit " +
                      std::to_string(limits::frame));
  return n;
}

request decode_request(std::span<const uint8_t> body) {
  if (body.empty()) throw bad_message("frame: empty (no type)");
  const uint8_t t = body[0];
  reader in(body.subspan(1), type_name(t));
  request out;
  switch (static_cast<type>(t)) {
    case type::hello:
      out = hello{in.u32("version")};
      break;
    case type::install:
      out = install{read_ruleset(in)};
      break;
    case type::learn: {
      learn l;
      l.profile = in.str("profile", limits::string);
      if (!valid_profile_name(l.profile))
        in.fail("profile", "'" + l.profile + "' is not [a-z0-9_-]{1,32}");
      l.address = in.addr("address");
      l.ttl = in.u32("ttl");
      if (l.ttl > limits::ttl)
        in.fail("ttl", std::to_string(l.ttl) + " s, limit " + std::to_string(limits::ttl));
      if (in.flag("forget")) l.forget = in.addr("forget");
      out = std::move(l);
      break;
    }
    case type::remove:
      out = remove{};
      break;
    case type::lifeline:
      out = lifeline{};
      break;
    case type::refused:
      out = refused{};
      break;
    case type::socket: {
      socket s;
      s.family = in.u8("family");
      if (s.family != 4 && s.family != 6)
        in.fail("family", std::to_string(s.family) + ", not 4 or 6");
      auto k = in.u8("kind");
      if (k != static_cast<uint8_t>(socket_kind::udp) &&
          k != static_cast<uint8_t>(socket_kind::tcp))
        in.fail("kind", std::to_string(k) + ", not udp (1) or tcp (2)");
      s.kind = static_cast<socket_kind>(k);
      out = s;
      break;
    }
    default:
      throw bad_message("frame: unknown request type " + std::to_string(t));
  }
  in.end();
  return out;
}

reply decode_reply(std::span<const uint8_t> body) {
  if (body.empty()) throw bad_message("frame: empty (no type)");
  const uint8_t t = body[0];
  reader in(body.subspan(1), type_name(t));
  reply out;
  if (t == static_cast<uint8_t>(type::ok)) {
    out = ok{};
  } else if (t == static_cast<uint8_t>(type::counts)) {
    counts c;
    const auto n = in.u32("packets");
    if (n > limits::profiles)
      in.fail("packets",
              std::to_string(n) + " profiles, limit " + std::to_string(limits::profiles));
    for (uint32_t i = 0; i < n; ++i) {
      auto f = "packets[" + std::to_string(i) + "]";
      auto name = in.str(f + ".profile", limits::string);
      if (!valid_profile_name(name))
        in.fail(f + ".profile", "'" + name + "' is not [a-z0-9_-]{1,32}");
      c.packets[name] = in.u64(f + ".count");
    }
    out = std::move(c);
  } else if (t == static_cast<uint8_t>(type::error)) {
    error e;
    e.code = static_cast<int32_t>(in.u32("errno"));
    e.message = in.str("message", limits::message);
    out = std::move(e);
  } else {
    throw bad_message("frame: unknown reply type " + std::to_string(t));
  }
  in.end();
  return out;
}

}  // namespace tprosshy::helper
