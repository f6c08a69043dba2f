#pragma once
// Installs a ruleset over netlink. The table carries the owner flag: it belongs to this
// object's netlink socket and the kernel deletes it when the socket closes, even on SIGKILL.
// So keep one netlink object for the process's life and send every change through it.
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nft/ruleset.hpp"

namespace tprosshy::nft {

class netlink {
 public:
  // Opens and binds the socket. Throws std::system_error (EPERM without CAP_NET_ADMIN).
  netlink();
  ~netlink();
  netlink(const netlink&) = delete;
  netlink& operator=(const netlink&) = delete;

  // One atomic batch: the table is replaced as a whole (installing twice never duplicates).
  // On any error nothing changes and std::system_error says what the kernel refused.
  void install(const ruleset& r);
  // Adds an address to a profile's learned set, expiring after `ttl` (kernel-side timeout).
  // With `forget`, that address leaves the profile's learned set in the same batch.
  void learn(const std::string& profile, const net::address& a, std::chrono::seconds ttl,
             std::optional<net::address> forget = std::nullopt);
  // Deletes the table if this object installed one, and the lock table it installed with it.
  void remove();

  // What a table of the inet family holds, for `tprosshy unlock` to say what it removes.
  struct table_info {
    bool exists = false;
    bool owned = false;  // the owner flag: a live process holds it
    uint32_t owner = 0;  // that process's netlink port id (its pid, for its first socket)
    std::vector<std::pair<std::string, std::size_t>> sets;  // name, elements
    std::map<std::string, uint64_t> refused;                // packets, by profile
    // The addresses of each profile's learned sets, with the time each has left.
    std::map<std::string, std::vector<learned_address>> learned;
  };
  table_info describe(const std::string& table);
  // Packets refused so far by the installed table, by profile (other_protocols: reject),
  // since it was installed: a new install starts from 0.
  std::map<std::string, uint64_t> refused();
  // Deletes a table this object did not install, if it is there (a crashed run's lock).
  void drop(const std::string& table);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace tprosshy::nft
