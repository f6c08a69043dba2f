#include "proxy/original_dst.hpp"

#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>

namespace tprosshy::proxy {

std::optional<boost::asio::ip::tcp::endpoint> original_dst(boost::asio::ip::tcp::socket& s,
                                                           boost::system::error_code& ec) {
  boost::asio::ip::tcp::endpoint out;
  const bool v6 = s.local_endpoint(ec).protocol() == boost::asio::ip::tcp::v6();
  if (ec) return std::nullopt;
  // The endpoint's storage is a sockaddr_in/sockaddr_in6, exactly what the kernel fills.
  socklen_t len = v6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  const int rc =
      v6 ? ::getsockopt(s.native_handle(), SOL_IPV6, IP6T_SO_ORIGINAL_DST, out.data(), &len)
         : ::getsockopt(s.native_handle(), SOL_IP, SO_ORIGINAL_DST, out.data(), &len);
  if (rc != 0) {
    ec.assign(errno, boost::system::system_category());
    return std::nullopt;
  }
  out.resize(len);
  return out;
}

}  // namespace tprosshy::proxy
