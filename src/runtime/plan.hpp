#pragma once
// From a loaded config to the values the subsystems run on: the routing table and the
// ruleset. Both come from the same table, so the kernel and the dispatcher agree.
#include <cstdint>
#include <map>
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

// Whether a running profile with settings `a` can carry on under `b` with its ssh
// connections as they are (the rest of a profile's settings apply in place).
bool same_connection(const config::profile& a, const config::profile& b);

// What a reload does, decided before anything is done: pure, so every case is a unit test.
struct reload_plan {
  // Settings the running process was built around, which cannot change under it: when any
  // is here, the reload changes nothing.
  std::vector<std::string> fixed;
  enum class step { disabled, keep, start };
  struct entry {
    step what = step::disabled;
    std::string name;
    bool replaces = false;  // start: a running profile of this name drains for it
  };
  std::vector<entry> profiles;       // one per profile of the new config, in its order
  std::vector<std::string> removed;  // running names the new config no longer enables
};

// `running`: the settings each running profile runs with, by name.
reload_plan plan_reload(const config::config& now, const config::config& next,
                        const std::map<std::string, config::profile>& running);

}  // namespace tprosshy::runtime
