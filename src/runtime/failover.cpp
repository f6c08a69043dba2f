#include "runtime/failover.hpp"

namespace tprosshy::runtime {

std::optional<std::size_t> pick_host(const service_times& hosts, std::optional<std::size_t> serving,
                                     std::chrono::steady_clock::duration failback_after) {
  const bool serving_ok = serving && *serving < hosts.size() && hosts[*serving];
  for (std::size_t h = 0; h < hosts.size(); ++h) {
    if (!hosts[h]) continue;
    if (serving_ok && h < *serving && *hosts[h] < failback_after) continue;
    return h;
  }
  return std::nullopt;
}

}  // namespace tprosshy::runtime
