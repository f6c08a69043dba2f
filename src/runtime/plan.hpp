#pragma once
// From a loaded config to the values the subsystems run on: the routing table and the
// ruleset. Both come from the same table, so the kernel and the dispatcher agree.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "nft/ruleset.hpp"
#include "routing/table.hpp"

namespace tprosshy::runtime {

// Packets of tprosshy's own sockets carry this mark and are never redirected.
inline constexpr uint32_t own_mark = 0x7470;

// Profile ids are indexes into cfg.profiles; disabled profiles add no routes.
routing::table make_table(const config::config& cfg);

struct ports {
  uint16_t tcp = 0;
  std::optional<uint16_t> dns;  // none: no DNS capture
};

// Whether any enabled profile resolves names: only then is DNS captured at all.
bool wants_dns(const config::config& cfg);

nft::ruleset make_ruleset(const config::config& cfg, const routing::table& table,
                          const std::vector<nft::endpoint>& bypass, ports p,
                          const std::vector<net::address>& resolvers);

}  // namespace tprosshy::runtime
