#include "net/prefix.hpp"

#include <charconv>

namespace tprosshy::net {

u128 to_u128(const address& a) {
  if (a.is_v4()) return a.to_v4().to_uint();
  u128 v = 0;
  for (auto b : a.to_v6().to_bytes()) v = (v << 8) | b;
  return v;
}

address from_u128(u128 v, bool v4) {
  if (v4) return boost::asio::ip::address_v4(static_cast<uint32_t>(v));
  boost::asio::ip::address_v6::bytes_type bytes;
  for (int i = 15; i >= 0; --i, v >>= 8) bytes[i] = static_cast<unsigned char>(v & 0xff);
  return boost::asio::ip::address_v6(bytes);
}

namespace {
u128 host_mask(unsigned length, unsigned max) {
  unsigned host_bits = max - length;
  if (host_bits == 0) return 0;
  if (host_bits >= 128) return ~u128(0);
  return (u128(1) << host_bits) - 1;
}
}  // namespace

bool prefix::contains(const address& a) const {
  if (a.is_v4() != is_v4()) return false;
  return (to_u128(a) & ~host_mask(length, max_length())) == to_u128(network);
}

bool prefix::contains(const prefix& p) const { return p.length >= length && contains(p.network); }

address prefix::last() const {
  return from_u128(to_u128(network) | host_mask(length, max_length()), is_v4());
}

std::string prefix::to_string() const { return network.to_string() + "/" + std::to_string(length); }

std::optional<prefix> parse_prefix(std::string_view text, std::string* error) {
  auto fail = [&](std::string why) -> std::optional<prefix> {
    if (error) *error = std::move(why);
    return std::nullopt;
  };
  auto slash = text.find('/');
  std::string addr_text(text.substr(0, slash));
  boost::system::error_code ec;
  auto a = boost::asio::ip::make_address(addr_text, ec);
  if (ec || (a.is_v6() && a.to_v6().scope_id() != 0))
    return fail("'" + std::string(text) + "' is not an IPv4 or IPv6 address or CIDR prefix");
  if (a.is_v6() && a.to_v6().is_v4_mapped())
    return fail("'" + std::string(text) + "' is an IPv4-mapped IPv6 address; write the IPv4 form");
  prefix p{a, a.is_v4() ? 32u : 128u};
  if (slash != std::string_view::npos) {
    auto len_text = text.substr(slash + 1);
    unsigned len = 0;
    auto [end, rc] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
    if (len_text.empty() || rc != std::errc{} || end != len_text.data() + len_text.size() ||
        len > p.max_length())
      return fail("'" + std::string(text) + "' has an invalid prefix length (0-" +
                  std::to_string(p.max_length()) + ")");
    p.length = len;
  }
  if (to_u128(a) & host_mask(p.length, p.max_length())) {
    prefix fixed{from_u128(to_u128(a) & ~host_mask(p.length, p.max_length()), a.is_v4()), p.length};
    return fail("'" + std::string(text) + "' has host bits set; did you mean " + fixed.to_string() +
                "?");
  }
  return p;
}

}  // namespace tprosshy::net
