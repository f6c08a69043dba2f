#pragma once
// What a caller may install: pure, so every rule of it is unit-tested. A root caller gets
// its ruleset as sent, in table `tprosshy`; any other uid gets a table of its own that
// redirects only its own sockets, to ports it owns, in local mode only.
#include <cstdint>
#include <functional>
#include <string>

#include "nft/ruleset.hpp"

namespace tprosshy::helper {

struct caller {
  uint32_t uid = 0;
  uint32_t gid = 0;
};

// tprosshy's own sockets (src/runtime/plan.hpp's own_mark) return from a root table. A
// user's marked sockets carry another mark, so a socket the helper hands to a user never
// bypasses the root daemon's table: only that user's own table lets it through.
inline constexpr uint32_t root_mark = 0x7470;
inline constexpr uint32_t user_mark = 0x7471;

enum class port_use { tcp_listen, udp_bound };

// Why `uid` may not have traffic redirected to `port` (empty when it may): every socket on
// that port must be the uid's and bound to loopback, and there must be one (sock_diag.hpp).
using port_check = std::function<std::string(port_use, uint16_t port, uint32_t uid)>;

std::string table_for(const caller& c);  // tprosshy, or tprosshy_u<uid>
uint32_t mark_for(const caller& c);

// The ruleset this caller may have, or std::system_error(EPERM) saying which field it may not.
nft::ruleset confine(nft::ruleset r, const caller& c, const port_check& owns);

}  // namespace tprosshy::helper
