#include "proxy/socks5.hpp"

#include <fmt/format.h>

namespace tprosshy::proxy::socks5 {

namespace {
constexpr std::uint8_t ver = 5;
constexpr std::uint8_t cmd_connect = 1;
constexpr std::uint8_t atyp_v4 = 1, atyp_domain = 3, atyp_v6 = 4;
constexpr std::size_t method_size = 2, head_size = 4;

answer make(status st, std::size_t size = 0, int code = -1, std::string_view error = {}) {
  answer a;
  a.state = st;
  a.size = size;
  a.code = code;
  a.error = error;
  return a;
}
answer malformed(std::string_view why) { return make(status::malformed, 0, -1, why); }
answer need(std::size_t n) { return make(status::incomplete, n); }
}  // namespace

std::vector<std::uint8_t> encode_connect(const boost::asio::ip::tcp::endpoint& dst) {
  std::vector<std::uint8_t> out{ver, 1, 0, ver, cmd_connect, 0};
  const auto a = dst.address();
  if (a.is_v4()) {
    out.push_back(atyp_v4);
    const auto b = a.to_v4().to_bytes();
    out.insert(out.end(), b.begin(), b.end());
  } else {
    out.push_back(atyp_v6);
    const auto b = a.to_v6().to_bytes();
    out.insert(out.end(), b.begin(), b.end());
  }
  out.push_back(static_cast<std::uint8_t>(dst.port() >> 8));
  out.push_back(static_cast<std::uint8_t>(dst.port() & 0xff));
  return out;
}

answer parse_answer(std::span<const std::uint8_t> in) {
  constexpr std::size_t min_size = method_size + head_size + 1;  // up to the domain length
  if (in.size() >= 1 && in[0] != ver) return malformed("method selection is not SOCKS5");
  if (in.size() >= 2 && in[1] != 0) {
    return malformed(in[1] == 0xff ? "server accepts no method we offer"
                                   : "server chose a method we did not offer");
  }
  if (in.size() < method_size + head_size) return need(min_size);
  const auto r = in.subspan(method_size);
  if (r[0] != ver) return malformed("reply is not SOCKS5");
  if (r[1] != 0) return make(status::refused, 0, r[1]);
  if (r[2] != 0) return malformed("reply reserved byte is not zero");
  std::size_t addr_size = 0;
  switch (r[3]) {
    case atyp_v4:
      addr_size = 4;
      break;
    case atyp_v6:
      addr_size = 16;
      break;
    case atyp_domain:
      if (r.size() < head_size + 1) return need(min_size);
      addr_size = 1 + r[head_size];
      break;
    default:
      return malformed("reply has an unknown address type");
  }
  const std::size_t total = method_size + head_size + addr_size + 2;
  if (in.size() < total) return need(total);
  if (in.size() > total) return malformed("bytes after the reply");

  const auto addr = r.subspan(head_size, addr_size);
  const auto port =
      static_cast<unsigned>(r[head_size + addr_size] << 8 | r[head_size + addr_size + 1]);
  std::string bound;
  if (r[3] == atyp_v4) {
    boost::asio::ip::address_v4::bytes_type b;
    std::copy(addr.begin(), addr.end(), b.begin());
    bound = fmt::format("{}:{}", boost::asio::ip::address_v4(b).to_string(), port);
  } else if (r[3] == atyp_v6) {
    boost::asio::ip::address_v6::bytes_type b;
    std::copy(addr.begin(), addr.end(), b.begin());
    bound = fmt::format("[{}]:{}", boost::asio::ip::address_v6(b).to_string(), port);
  } else {
    bound = fmt::format("{}:{}", std::string(addr.begin() + 1, addr.end()), port);
  }
  auto a = make(status::ok, total, 0);
  a.bound = std::move(bound);
  return a;
}

std::string_view describe(int code) {
  switch (code) {
    case 0:
      return "succeeded";
    case 1:
      return "general SOCKS server failure";
    case 2:
      return "connection not allowed by ruleset";
    case 3:
      return "network unreachable";
    case 4:
      return "host unreachable";
    case 5:
      return "connection refused";
    case 6:
      return "TTL expired";
    case 7:
      return "command not supported";
    case 8:
      return "address type not supported";
    default:
      return "unassigned reply code";
  }
}

}  // namespace tprosshy::proxy::socks5
