#pragma once
#include <chrono>
#include <cstddef>
#include <optional>
#include <vector>

namespace tprosshy::runtime {

// How long each host of a profile has been in service (nullopt: it is not).
using service_times = std::vector<std::optional<std::chrono::steady_clock::duration>>;

// The host new flows go to: the first one in service, except that an earlier host than the
// serving one must have been in service for `failback_after` first, so that a host going
// up and down does not move new flows back and forth. A serving host that is out of
// service holds nothing back. nullopt: no host is in service.
std::optional<std::size_t> pick_host(const service_times& hosts, std::optional<std::size_t> serving,
                                     std::chrono::steady_clock::duration failback_after);

}  // namespace tprosshy::runtime
