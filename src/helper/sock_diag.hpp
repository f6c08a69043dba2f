#pragma once
// Who holds a port, asked of the kernel (NETLINK_SOCK_DIAG) in this network namespace.
#include <cstdint>
#include <string>
#include <vector>

#include "helper/confine.hpp"
#include "net/prefix.hpp"

namespace tprosshy::helper {

struct port_holder {
  net::address address;  // bound address
  uint32_t uid = 0;      // the socket's owner
};

// TCP sockets listening on `port` (tcp_listen) or UDP sockets bound to it (udp_bound), both
// families. Throws std::system_error when the kernel cannot be asked.
std::vector<port_holder> holders(port_use use, uint16_t port);

// A port_check: "" when `uid` holds every socket on the port, bound to loopback
// (127.0.0.0/8 or ::1), and there is one.
std::string owned_on_loopback(port_use use, uint16_t port, uint32_t uid);

}  // namespace tprosshy::helper
