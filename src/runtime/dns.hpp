#pragma once
// The DNS side of a run: the dns::server on the DNS port, this machine's resolvers as the
// local upstream, and each profile's own upstream for its domains.
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/address.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "runtime/profile.hpp"

namespace tprosshy::runtime {

class dns_front {
 public:
  // (profile, address, TTL in seconds) for the addresses a profile's nameserver answered.
  using learn_fn = std::function<void(profile&, const net::address&, std::uint32_t)>;

  // (family, socket type) -> a socket the ruleset never redirects; unset: marked here.
  using socket_fn = std::function<int(int, int)>;

  // Binds the DNS port on `listen`. Null when no enabled profile has DNS domains: then
  // nothing is captured. Throws boost::system::system_error.
  static std::unique_ptr<dns_front> make(boost::asio::any_io_executor ex, const config::config& cfg,
                                         const std::vector<boost::asio::ip::address>& listen,
                                         const std::vector<std::shared_ptr<profile>>& profiles,
                                         learn_fn learn, socket_fn own_socket = {});
  ~dns_front();

  // A reload: the profiles now enabled (in config order) take the names their domains
  // match; cached answers for names `stale` says yes to are dropped, the others kept.
  void update(const config::config& cfg, const std::vector<std::shared_ptr<profile>>& profiles,
              const std::function<bool(std::string_view name)>& stale);
  // Which profile's domains a name falls under now; null: the local upstream's.
  profile* owner(std::string_view name) const;

  std::uint16_t port() const;
  std::uint64_t cache_hits() const;
  // Answers to names no profile takes, by rcode name.
  const std::map<std::string, std::uint64_t>& local_answers() const;
  // This machine's nameservers (its resolv.conf): queries sent to them are captured.
  const std::vector<net::address>& system_resolvers() const;
  void stop();

 private:
  struct impl;
  explicit dns_front(std::unique_ptr<impl> i);
  std::unique_ptr<impl> impl_;
};

// Reads nameservers from a resolv.conf file; empty if it cannot be read.
std::vector<net::address> read_resolv_conf(const char* path);

}  // namespace tprosshy::runtime
