#include "dns/message.hpp"

#include <algorithm>
#include <array>
#include <cstring>

namespace tprosshy::dns {

namespace {

constexpr std::size_t max_name = 255;  // wire length, RFC 1035 2.3.4
constexpr int max_hops = 64;

// Where a record sits in the message, for the in-place rewrites.
struct rr_pos {
  std::size_t start, ttl, end;
  std::uint16_t type;
};

class reader {
 public:
  explicit reader(std::span<const std::uint8_t> m) : m_(m) {}

  std::size_t pos() const { return pos_; }
  bool has(std::size_t n) const { return m_.size() - pos_ >= n; }
  bool u16(std::uint16_t& v) {
    if (!has(2)) return false;
    v = static_cast<std::uint16_t>(m_[pos_] << 8 | m_[pos_ + 1]);
    pos_ += 2;
    return true;
  }
  bool u32(std::uint32_t& v) {
    if (!has(4)) return false;
    v = std::uint32_t(m_[pos_]) << 24 | std::uint32_t(m_[pos_ + 1]) << 16 |
        std::uint32_t(m_[pos_ + 2]) << 8 | m_[pos_ + 3];
    pos_ += 4;
    return true;
  }
  bool skip(std::size_t n) {
    if (!has(n)) return false;
    pos_ += n;
    return true;
  }

  // A possibly compressed name. Pointers must go strictly backwards and stay out of the
  // header, so no loop is possible; the hop count is a second fence.
  bool name(std::string* out, const char*& why) {
    std::size_t p = pos_, wire = 0;
    bool jumped = false;
    int hops = 0;
    if (out) out->clear();
    for (;;) {
      if (p >= m_.size()) return why = "name runs past the end", false;
      const std::uint8_t len = m_[p];
      if ((len & 0xc0) == 0xc0) {
        if (p + 1 >= m_.size()) return why = "name pointer cut short", false;
        const std::size_t target = std::size_t(len & 0x3f) << 8 | m_[p + 1];
        if (target >= p || target < header_size) return why = "bad compression pointer", false;
        if (++hops > max_hops) return why = "too many compression pointers", false;
        if (!jumped) pos_ = p + 2;
        jumped = true;
        p = target;
        continue;
      }
      if (len & 0xc0) return why = "unsupported label type", false;
      wire += len + 1;
      if (wire > max_name) return why = "name longer than 255 bytes", false;
      if (len == 0) {
        if (!jumped) pos_ = p + 1;
        if (out && out->empty()) *out = ".";
        return true;
      }
      if (p + 1 + len > m_.size()) return why = "label runs past the end", false;
      if (out) {
        if (!out->empty()) out->push_back('.');
        for (std::size_t i = p + 1; i <= p + len; ++i) {
          const std::uint8_t c = m_[i];
          if (c > 0x20 && c < 0x7f && c != '.' && c != '\\') {
            out->push_back(static_cast<char>(c));
          } else {
            const char esc[] = {'\\', char('0' + c / 100), char('0' + c / 10 % 10),
                                char('0' + c % 10)};
            out->append(esc, 4);
          }
        }
      }
      p += 1 + len;
    }
  }

 private:
  std::span<const std::uint8_t> m_;
  std::size_t pos_ = 0;
};

bool read_header(reader& r, header& h) {
  return r.u16(h.id) && r.u16(h.flags) && r.u16(h.qdcount) && r.u16(h.ancount) &&
         r.u16(h.nscount) && r.u16(h.arcount);
}

bool read_question(reader& r, question& q, const char*& why) {
  if (!r.name(&q.name, why)) return false;
  if (!r.u16(q.type) || !r.u16(q.cls)) return why = "question cut short", false;
  return true;
}

// Parses everything; `out` and `rrs` are optional outputs.
bool parse_all(std::span<const std::uint8_t> m, message* out, std::vector<rr_pos>* rrs,
               const char*& why) {
  reader r(m);
  message msg;
  if (!read_header(r, msg.head)) return why = "shorter than a header", false;
  for (unsigned i = 0; i < msg.head.qdcount; ++i) {
    question q;
    if (!read_question(r, q, why)) return false;
    if (out) msg.questions.push_back(std::move(q));
  }
  msg.question_end = r.pos();
  const unsigned counts[3] = {msg.head.ancount, msg.head.nscount, msg.head.arcount};
  std::vector<record>* sections[3] = {&msg.answers, &msg.authority, &msg.additional};
  for (int s = 0; s < 3; ++s) {
    for (unsigned i = 0; i < counts[s]; ++i) {
      record rec;
      std::uint16_t rdlen = 0;
      const std::size_t start = r.pos();
      if (!r.name(out ? &rec.name : nullptr, why)) return false;
      const std::size_t ttl_at = r.pos() + 4;
      if (!r.u16(rec.type) || !r.u16(rec.cls) || !r.u32(rec.ttl) || !r.u16(rdlen))
        return why = "record cut short", false;
      if (!r.has(rdlen)) return why = "record data runs past the end", false;
      const std::size_t rdata = r.pos(), end = rdata + rdlen;
      if (rec.type == rrtype::opt) {
        if (s != 2) return why = "OPT outside the additional section", false;
        if (msg.edns_size) return why = "more than one OPT record", false;
        if (m[start] != 0) return why = "OPT with a non-root name", false;
        msg.edns_size = rec.cls;
      } else if (rec.type == rrtype::a && rec.cls == 1) {
        if (rdlen != 4) return why = "A record of the wrong length", false;
        std::array<unsigned char, 4> b;
        std::memcpy(b.data(), &m[rdata], 4);
        rec.address = boost::asio::ip::address_v4(b);
      } else if (rec.type == rrtype::aaaa && rec.cls == 1) {
        if (rdlen != 16) return why = "AAAA record of the wrong length", false;
        std::array<unsigned char, 16> b;
        std::memcpy(b.data(), &m[rdata], 16);
        rec.address = boost::asio::ip::address_v6(b);
      } else if (rec.type == rrtype::soa) {
        // The names may point anywhere earlier, but must end inside the record.
        reader sr(m.first(end));
        sr.skip(rdata);
        std::uint32_t serial, refresh, retry, expire, minimum;
        if (!sr.name(nullptr, why) || !sr.name(nullptr, why)) return false;
        if (!sr.u32(serial) || !sr.u32(refresh) || !sr.u32(retry) || !sr.u32(expire) ||
            !sr.u32(minimum) || sr.pos() != end)
          return why = "malformed SOA record", false;
        rec.soa_minimum = minimum;
      }
      r.skip(rdlen);
      if (rrs) rrs->push_back({start, ttl_at, end, rec.type});
      if (out) sections[s]->push_back(std::move(rec));
    }
  }
  if (out) *out = std::move(msg);
  return true;
}

void put16(std::uint8_t* p, std::uint16_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}

void put32(std::uint8_t* p, std::uint32_t v) {
  put16(p, static_cast<std::uint16_t>(v >> 16));
  put16(p + 2, static_cast<std::uint16_t>(v));
}

// End of the question section, or nullopt.
std::optional<std::size_t> questions_end(std::span<const std::uint8_t> m, unsigned count) {
  reader r(m);
  header h;
  const char* why = nullptr;
  if (!read_header(r, h)) return std::nullopt;
  for (unsigned i = 0; i < count; ++i) {
    question q;
    if (!read_question(r, q, why)) return std::nullopt;
  }
  return r.pos();
}

}  // namespace

std::optional<header> parse_header(std::span<const std::uint8_t> msg) {
  reader r(msg);
  header h;
  if (!read_header(r, h)) return std::nullopt;
  return h;
}

std::optional<message> parse(std::span<const std::uint8_t> msg, std::string* why) {
  message m;
  const char* reason = nullptr;
  if (!parse_all(msg, &m, nullptr, reason)) {
    if (why) *why = reason ? reason : "malformed";
    return std::nullopt;
  }
  return m;
}

std::string lower(std::string_view name) {
  std::string s(name);
  for (auto& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

std::size_t udp_limit(const message& query) {
  return query.edns_size ? std::max<std::size_t>(512, *query.edns_size) : 512;
}

bytes make_reply(std::span<const std::uint8_t> query, rcode code) {
  const auto h = parse_header(query);
  if (!h) return {};
  bytes out(header_size, 0);
  std::optional<std::size_t> qend;
  if (h->qdcount == 1) qend = questions_end(query, 1);
  if (qend) out.assign(query.begin(), query.begin() + static_cast<std::ptrdiff_t>(*qend));
  put16(&out[0], h->id);
  put16(&out[2], static_cast<std::uint16_t>(0x8000 | (h->flags & 0x7900) | 0x0080 |
                                            static_cast<std::uint16_t>(code)));
  put16(&out[4], qend ? 1 : 0);
  std::fill(out.begin() + 6, out.begin() + header_size, 0);
  return out;
}

std::optional<bytes> truncate(std::span<const std::uint8_t> answer) {
  message m;
  const char* why = nullptr;
  if (!parse_all(answer, &m, nullptr, why)) return std::nullopt;
  bytes out(answer.begin(), answer.begin() + static_cast<std::ptrdiff_t>(m.question_end));
  out[2] |= 0x02;
  std::fill(out.begin() + 6, out.begin() + header_size, 0);
  return out;
}

bool age_ttls(std::span<std::uint8_t> msg, std::uint32_t elapsed) {
  std::vector<rr_pos> rrs;
  const char* why = nullptr;
  if (!parse_all(msg, nullptr, &rrs, why)) return false;
  std::vector<std::uint32_t> old;
  for (const auto& rr : rrs) {
    std::uint8_t* p = &msg[rr.ttl];
    const std::uint32_t ttl =
        std::uint32_t(p[0]) << 24 | std::uint32_t(p[1]) << 16 | std::uint32_t(p[2]) << 8 | p[3];
    old.push_back(ttl);
    if (rr.type != rrtype::opt) put32(p, ttl > elapsed ? ttl - elapsed : 0);
  }
  // A crafted message can have a name whose labels run over a TTL field; if the new
  // bytes break it, put the old ones back.
  if (parse_all(msg, nullptr, nullptr, why)) return true;
  for (std::size_t i = rrs.size(); i-- > 0;) put32(&msg[rrs[i].ttl], old[i]);
  return false;
}

std::optional<std::uint32_t> cache_ttl(const message& m) {
  if (m.head.tc() || !m.head.qr() || m.questions.size() != 1) return std::nullopt;
  const rcode c = m.code();
  if (c == rcode::noerror && !m.answers.empty()) {
    std::uint32_t ttl = UINT32_MAX;
    for (const auto& r : m.answers) ttl = std::min(ttl, r.ttl);
    return ttl;
  }
  if (c == rcode::nxdomain || c == rcode::noerror) {
    for (const auto& r : m.authority)
      if (r.type == rrtype::soa && r.soa_minimum) return std::min(r.ttl, *r.soa_minimum);
  }
  return std::nullopt;
}

bool strip_opt(bytes& msg) {
  std::vector<rr_pos> rrs;
  message m;
  const char* why = nullptr;
  if (!parse_all(msg, &m, &rrs, why) || rrs.empty() || rrs.back().type != rrtype::opt) return false;
  // A name may run on through the OPT bytes (a pointer back, then labels onwards), so
  // the shorter message must still parse; else it stays as it was.
  bytes shorter(msg.begin(), msg.begin() + static_cast<std::ptrdiff_t>(rrs.back().start));
  put16(&shorter[10], static_cast<std::uint16_t>(m.head.arcount - 1));
  if (!parse_all(shorter, nullptr, nullptr, why)) return false;
  msg = std::move(shorter);
  return true;
}

void copy_question(std::span<std::uint8_t> answer, std::span<const std::uint8_t> query) {
  const auto ha = parse_header(answer), hq = parse_header(query);
  if (!ha || !hq || ha->qdcount != 1 || hq->qdcount != 1) return;
  const auto ea = questions_end(answer, 1), eq = questions_end(query, 1);
  if (!ea || !eq || *ea != *eq) return;
  for (std::size_t i = header_size; i < *ea; ++i) {
    auto fold = [](std::uint8_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; };
    if (fold(answer[i]) != fold(query[i])) return;
  }
  std::copy(query.begin() + header_size, query.begin() + static_cast<std::ptrdiff_t>(*eq),
            answer.begin() + header_size);
}

bytes make_query(std::uint16_t id, std::string_view name, std::uint16_t type) {
  bytes out(header_size, 0);
  put16(&out[0], id);
  put16(&out[2], 0x0100);  // RD
  put16(&out[4], 1);
  while (!name.empty() && name != ".") {
    const auto dot = name.find('.');
    const auto label = name.substr(0, dot);
    out.push_back(static_cast<std::uint8_t>(std::min<std::size_t>(label.size(), 63)));
    out.insert(out.end(), label.begin(), label.begin() + std::min<std::size_t>(label.size(), 63));
    name = dot == std::string_view::npos ? std::string_view{} : name.substr(dot + 1);
  }
  out.push_back(0);
  out.push_back(static_cast<std::uint8_t>(type >> 8));
  out.push_back(static_cast<std::uint8_t>(type));
  out.push_back(0);
  out.push_back(1);
  return out;
}

}  // namespace tprosshy::dns
