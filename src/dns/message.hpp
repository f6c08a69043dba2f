#pragma once
// DNS wire format: a bounds-checked parser and the few rewrites the server needs. Every
// function takes untrusted bytes; malformed input gives nullopt/false, never a throw.
#include <boost/asio/ip/address.hpp>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace tprosshy::dns {

using bytes = std::vector<std::uint8_t>;

enum class rcode : std::uint8_t {
  noerror = 0,
  formerr = 1,
  servfail = 2,
  nxdomain = 3,
  notimp = 4,
  refused = 5
};

namespace rrtype {
constexpr std::uint16_t a = 1, ns = 2, cname = 5, soa = 6, aaaa = 28, opt = 41;
}

constexpr std::size_t header_size = 12;

struct header {
  std::uint16_t id = 0, flags = 0;
  std::uint16_t qdcount = 0, ancount = 0, nscount = 0, arcount = 0;

  bool qr() const { return flags & 0x8000; }
  bool tc() const { return flags & 0x0200; }
  std::uint8_t opcode() const { return (flags >> 11) & 0xf; }
  rcode code() const { return static_cast<rcode>(flags & 0xf); }
};

struct question {
  // Presentation form without the trailing dot ("." for the root); bytes other than
  // printable ASCII, '.' and '\' are written \DDD, so every '.' is a label boundary.
  // Case is kept as sent.
  std::string name;
  std::uint16_t type = 0, cls = 1;
};

struct record {
  std::string name;
  std::uint16_t type = 0, cls = 0;
  std::uint32_t ttl = 0;
  std::optional<boost::asio::ip::address> address;  // A and AAAA
  std::optional<std::uint32_t> soa_minimum;         // SOA
};

struct message {
  header head;
  std::vector<question> questions;
  std::vector<record> answers, authority, additional;
  std::size_t question_end = header_size;  // offset of the first byte after the questions
  std::optional<std::uint16_t> edns_size;  // the OPT record's UDP payload size, if any

  rcode code() const { return head.code(); }
};

std::optional<header> parse_header(std::span<const std::uint8_t> msg);
// Whole message. On failure returns nullopt and, if given, says why in *why.
std::optional<message> parse(std::span<const std::uint8_t> msg, std::string* why = nullptr);

// Lower case ASCII, for cache keys and domain matching.
std::string lower(std::string_view name);

// The UDP payload a client can take: its EDNS size (at least 512), else 512.
std::size_t udp_limit(const message& query);

// A reply to `query` with the given rcode: its ID, opcode, RD and question (when the
// question parses; else none), QR and RA set, no records.
bytes make_reply(std::span<const std::uint8_t> query, rcode code);

// Header and question of `answer` with TC set and the record counts zeroed: what a UDP
// client gets when the answer does not fit. nullopt if `answer` does not parse.
std::optional<bytes> truncate(std::span<const std::uint8_t> answer);

// Lowers every record's TTL (OPT excepted) by `elapsed` seconds, not below 0. False (and
// the message unchanged) if it does not parse before or after.
bool age_ttls(std::span<std::uint8_t> msg, std::uint32_t elapsed);

// How long an answer may be cached, in seconds: the least answer TTL for a positive
// answer; min(SOA TTL, SOA MINIMUM) for NXDOMAIN or NODATA (RFC 2308); nullopt otherwise
// (SERVFAIL, truncated, no SOA).
std::optional<std::uint32_t> cache_ttl(const message& answer);

// Removes a trailing OPT record (for clients that sent none). False (message unchanged)
// if there is none at the end, or the message does not parse before or after.
bool strip_opt(bytes& msg);

// Copies the question section of `query` over that of `answer` when both have the same
// length (same names up to case): clients that randomise case get theirs back.
void copy_question(std::span<std::uint8_t> answer, std::span<const std::uint8_t> query);

inline std::uint16_t get_id(std::span<const std::uint8_t> msg) {
  return msg.size() >= 2 ? static_cast<std::uint16_t>(msg[0] << 8 | msg[1]) : 0;
}
inline void set_id(std::span<std::uint8_t> msg, std::uint16_t id) {
  if (msg.size() < 2) return;
  msg[0] = static_cast<std::uint8_t>(id >> 8);
  msg[1] = static_cast<std::uint8_t>(id);
}

// A query for (name, type) with RD set, for tests and probes. Name in the form above.
bytes make_query(std::uint16_t id, std::string_view name, std::uint16_t type);

}  // namespace tprosshy::dns
