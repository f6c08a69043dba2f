#include "helper/sock_diag.hpp"

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "net/fd.hpp"

namespace tprosshy::helper {

namespace {

[[noreturn]] void fail(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), "sock_diag: " + what);
}

net::address address_of(const inet_diag_msg& m) {
  if (m.idiag_family == AF_INET) {
    boost::asio::ip::address_v4::bytes_type b;
    std::memcpy(b.data(), m.id.idiag_src, 4);
    return boost::asio::ip::address_v4(b);
  }
  boost::asio::ip::address_v6::bytes_type b;
  std::memcpy(b.data(), m.id.idiag_src, 16);
  return boost::asio::ip::address_v6(b);
}

bool loopback(const net::address& a) {
  if (a.is_v4()) return a.to_v4().is_loopback();
  auto v6 = a.to_v6();
  return v6.is_loopback() ||
         (v6.is_v4_mapped() &&
          boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, v6).is_loopback());
}

void dump(int fd, int family, uint16_t port, port_use use, std::vector<port_holder>& out) {
  struct {
    nlmsghdr h;
    inet_diag_req_v2 r;
  } req{};
  req.h.nlmsg_len = sizeof req;
  req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.r.sdiag_family = static_cast<uint8_t>(family);
  req.r.sdiag_protocol = use == port_use::tcp_listen ? IPPROTO_TCP : IPPROTO_UDP;
  req.r.idiag_states = use == port_use::tcp_listen ? 1u << TCP_LISTEN : ~0u;
  if (::send(fd, &req, sizeof req, 0) != static_cast<ssize_t>(sizeof req))
    fail(errno, "sending the request");
  std::vector<char> buf(64 * 1024);
  for (;;) {
    auto n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(errno, "reading the answer");
    }
    if (n == 0) fail(EPROTO, "the kernel closed the socket");
    int left = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, left);
         h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_type == NLMSG_DONE) return;
      if (h->nlmsg_type == NLMSG_ERROR) {
        auto* e = static_cast<nlmsgerr*>(NLMSG_DATA(h));
        fail(h->nlmsg_len >= NLMSG_LENGTH(sizeof *e) ? -e->error : EPROTO, "the dump");
      }
      if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
          h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg)))
        continue;
      auto* m = static_cast<inet_diag_msg*>(NLMSG_DATA(h));
      if (ntohs(m->id.idiag_sport) == port) out.push_back({address_of(*m), m->idiag_uid});
    }
  }
}

}  // namespace

std::vector<port_holder> holders(port_use use, uint16_t port) {
  net::unique_fd fd(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!fd) fail(errno, "socket");
  std::vector<port_holder> out;
  for (int family : {AF_INET, AF_INET6}) dump(fd.get(), family, port, use, out);
  return out;
}

std::string owned_on_loopback(port_use use, uint16_t port, uint32_t uid) {
  const char* what = use == port_use::tcp_listen ? "TCP listener" : "UDP socket";
  auto found = holders(use, port);
  if (found.empty()) return std::string("no ") + what + " of uid " + std::to_string(uid) + " on it";
  for (const auto& h : found) {
    if (h.uid != uid)
      return std::string("a ") + what + " of uid " + std::to_string(h.uid) + " holds it";
    if (!loopback(h.address))
      return std::string("the ") + what + " on it is bound to " + h.address.to_string() +
             ", not to loopback";
  }
  return "";
}

}  // namespace tprosshy::helper
