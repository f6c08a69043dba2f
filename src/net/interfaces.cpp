#include "net/interfaces.hpp"

#include <ifaddrs.h>
#include <netinet/in.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstring>

namespace tprosshy::net {

namespace asio = boost::asio;

std::vector<address> interface_addresses(const std::vector<std::string>& names) {
  std::vector<address> out;
  ifaddrs* ifs = nullptr;
  if (::getifaddrs(&ifs) != 0) return out;
  for (auto* i = ifs; i; i = i->ifa_next) {
    if (!i->ifa_addr || std::find(names.begin(), names.end(), i->ifa_name) == names.end()) continue;
    if (i->ifa_addr->sa_family == AF_INET) {
      const auto* s = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
      out.push_back(asio::ip::address_v4(ntohl(s->sin_addr.s_addr)));
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      const auto* s = reinterpret_cast<const sockaddr_in6*>(i->ifa_addr);
      asio::ip::address_v6::bytes_type b;
      std::memcpy(b.data(), &s->sin6_addr, 16);
      const asio::ip::address_v6 a(b);
      if (!a.is_link_local()) out.push_back(a);
    }
  }
  ::freeifaddrs(ifs);
  return out;
}

bool can_bind(const address& a) {
  asio::io_context io;
  boost::system::error_code ec;
  asio::ip::tcp::acceptor acc(io);
  acc.open(a.is_v4() ? asio::ip::tcp::v4() : asio::ip::tcp::v6(), ec);
  if (!ec) acc.bind({a, 0}, ec);
  return !ec;
}

}  // namespace tprosshy::net
