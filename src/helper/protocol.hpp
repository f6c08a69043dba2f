#pragma once
// The helper's wire format. A frame is a u32 big-endian length of what follows, a u8 type,
// then the payload. Strings are a u16 length and bytes, addresses a u8 family (4 or 6) and
// 4 or 16 bytes, vectors a u32 count. Decoding trusts nothing: every count, string and
// value is checked against the limits below, and a failure names the field and the limit.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "nft/ruleset.hpp"

namespace tprosshy::helper {

namespace limits {
inline constexpr uint32_t frame = 8 << 20;     // bytes after the length prefix
inline constexpr std::size_t profiles = 256;   // per ruleset
inline constexpr std::size_t ranges = 65536;   // routed ranges and excludes, whole ruleset
inline constexpr std::size_t learned = 65536;  // known learned addresses per profile
inline constexpr std::size_t interfaces = 64;  // gateway interfaces
inline constexpr std::size_t ifname = 15;      // IFNAMSIZ - 1
inline constexpr std::size_t resolvers = 64;   // captured DNS resolvers
inline constexpr std::size_t bypass = 1024;    // ssh server endpoints
inline constexpr std::size_t string = 256;     // any other string
inline constexpr std::size_t message = 4096;   // an error reply's message
inline constexpr std::chrono::seconds lifeline_time{10};  // a table outlives its caller, at most
inline constexpr std::size_t name = 32;                   // profile and table names
inline constexpr uint32_t ttl = 24 * 60 * 60;             // seconds a learned address may live
}  // namespace limits

// 2: refuse_other, learn forget, lifeline; 3: lock, refused
inline constexpr uint32_t version = 3;

enum class type : uint8_t {
  hello = 1,
  install = 2,
  learn = 3,
  remove = 4,
  socket = 5,
  lifeline = 6,
  refused = 7,
  ok = 0x80,
  error = 0x81,
  counts = 0x82,
};

enum class socket_kind : uint8_t { udp = 1, tcp = 2 };

// The caller's /proc/self/ns/net descriptor rides along by SCM_RIGHTS.
struct hello {
  uint32_t version = helper::version;
  friend bool operator==(const hello&, const hello&) = default;
};
struct install {
  nft::ruleset rules;
  friend bool operator==(const install&, const install&) = default;
};
struct learn {
  std::string profile;
  net::address address;
  uint32_t ttl = 0;                    // seconds
  std::optional<net::address> forget;  // goes from the profile's set in the same batch
  friend bool operator==(const learn&, const learn&) = default;
};
struct remove {
  friend bool operator==(const remove&, const remove&) = default;
};
// A socket with the caller's mark set, returned by SCM_RIGHTS with the ok reply.
struct socket {
  uint8_t family = 4;  // 4 or 6
  socket_kind kind = socket_kind::tcp;
  friend bool operator==(const socket&, const socket&) = default;
};
// The write end of a pipe whose read end the helper keeps: when the caller's connection
// closes, its table stays until every holder of that end is gone (the caller's ssh
// children inherit it) or limits::lifeline_time passes, so that a crashed caller's ssh
// resets its flows while the NAT that translates those resets still stands.
struct lifeline {
  friend bool operator==(const lifeline&, const lifeline&) = default;
};
// The installed table's refusals so far (other_protocols: reject), answered with `counts`.
struct refused {
  friend bool operator==(const refused&, const refused&) = default;
};
using request = std::variant<hello, install, learn, remove, socket, lifeline, refused>;

struct ok {
  friend bool operator==(const ok&, const ok&) = default;
};
struct error {
  int32_t code = 0;  // errno
  std::string message;
  friend bool operator==(const error&, const error&) = default;
};
// Packets by profile name, since the table was installed.
struct counts {
  std::map<std::string, uint64_t> packets;
  friend bool operator==(const counts&, const counts&) = default;
};
using reply = std::variant<ok, error, counts>;

// What a decoder refuses, naming the field: "install: profiles[3].v4: 70000 ranges, limit 65536".
class bad_message : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Whole frames, length prefix included. Encoding checks only what the format cannot carry
// (a string over 65535 bytes throws bad_message); the limits are the decoder's business, so
// a test can send what a hostile caller would.
std::vector<uint8_t> encode(const request& r);
std::vector<uint8_t> encode(const reply& r);

// The length a 4-byte prefix announces, checked against limits::frame (throws bad_message).
uint32_t frame_length(std::span<const uint8_t, 4> prefix);
// A frame's body (type and payload, without the length prefix).
request decode_request(std::span<const uint8_t> body);
reply decode_reply(std::span<const uint8_t> body);

// The rules of the config: profile names [a-z0-9_-]{1,32}, table names [a-z0-9_]{1,32}.
bool valid_profile_name(const std::string& s);
bool valid_table_name(const std::string& s);

}  // namespace tprosshy::helper
