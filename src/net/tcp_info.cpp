// <linux/tcp.h> has the byte counters that glibc's struct tcp_info lacks; it clashes with
// <netinet/tcp.h>, so it stays alone in this file.
#include "net/tcp_info.hpp"

#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

namespace tprosshy::net {

byte_counts tcp_bytes(int fd) {
  tcp_info ti{};
  socklen_t len = sizeof ti;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return {};
  int unread = 0, unsent = 0;
  if (::ioctl(fd, SIOCINQ, &unread) != 0) unread = 0;
  if (::ioctl(fd, SIOCOUTQ, &unsent) != 0) unsent = 0;
  // A FIN takes a sequence number, and bytes_received counts it. (The states' values are
  // the kernel's, include/net/tcp_states.h.)
  enum { time_wait = 6, close_wait = 8, last_ack = 9, closing = 11 };
  const auto st = ti.tcpi_state;
  const bool fin_in = st == close_wait || st == last_ack || st == closing || st == time_wait;
  byte_counts c;
  const std::uint64_t in = ti.tcpi_bytes_received - (fin_in ? 1 : 0);
  c.received =
      in > static_cast<std::uint64_t>(unread) ? in - static_cast<std::uint64_t>(unread) : 0;
  c.sent = ti.tcpi_bytes_acked + static_cast<std::uint64_t>(unsent);
  return c;
}

}  // namespace tprosshy::net
