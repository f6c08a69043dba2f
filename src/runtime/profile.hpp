#pragma once
// One profile at run time, known by its name: where its ssh server is (for the bypass
// rules), its tunnel, its first verdict and last error, its DNS upstream and remote
// nameserver, and its counters. The runtime owns it; nothing else keeps its state.
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "dns/upstream.hpp"
#include "nft/ruleset.hpp"
#include "tunnel/tunnel.hpp"

namespace tprosshy::runtime {

struct counters {
  std::uint64_t flows_ok = 0;       // carried to their end
  std::uint64_t flows_reset = 0;    // reset after ssh took them (ssh went away)
  std::uint64_t flows_refused = 0;  // reset before: refused, unreachable, no answer, down
  std::uint64_t bytes_up = 0, bytes_down = 0;
  std::uint64_t restarts = 0;                        // ssh exits after the tunnel had been up
  std::uint64_t failovers = 0;                       // new flows moved to another host
  std::uint64_t learned_evicted = 0;                 // learned addresses dns.learn_limit pushed out
  std::map<std::string, std::uint64_t> dns_answers;  // by rcode name
};

// One ssh of a profile: to hosts[host], the member-th of its pool.
struct member {
  std::size_t host = 0;
  std::size_t index = 0;
  std::shared_ptr<tunnel::tunnel> tunnel;
  std::optional<std::chrono::system_clock::time_point> up_since;
  bool was_up = false;
};

// Where a profile's ssh lives.
struct ssh_home {
  std::string control_path;                      // the stem of its tunnels' control sockets
  std::string known_hosts;                       // its pinned host keys, written when it has some
  std::optional<tunnel::account> as;             // the account every ssh of it runs as; none: ours
  int lifeline = -1;                             // every ssh of it inherits this descriptor
  std::size_t max_setups_per_source = SIZE_MAX;  // tunnel::options', set in gateway mode
};

class profile {
 public:
  enum class event { bypass, up, down, nameserver };
  using observer = std::function<void(profile&, event)>;

  // `totals`: the counters of an earlier object of the same name (a reload that replaced
  // it), so that a name's counters never go back; null: fresh ones.
  profile(boost::asio::any_io_executor ex, config::profile settings, ssh_home home,
          observer on_event, std::shared_ptr<counters> totals = nullptr);
  ~profile();
  profile(const profile&) = delete;
  profile& operator=(const profile&) = delete;

  const std::string& name() const { return settings_.name; }
  const config::profile& settings() const { return settings_; }
  // Whether `other` needs new ssh processes: other hosts, ssh arguments, pool or probes.
  // Takes over settings that need no new ssh (subnets, excludes, DNS rules) at once.
  void update(config::profile settings);
  // Tries once, within `limit`, to find every host's ssh server, so that a profile started
  // by a reload has its bypass rules in the reload's ruleset; run() does not ask again.
  boost::asio::awaitable<void> locate(std::chrono::milliseconds limit);

  // For each host: finds its ssh server (`ssh -G` and a lookup, retried with the tunnels'
  // backoff until they work), then runs its pool of tunnels, staggered; until stop().
  // Spawn it once.
  boost::asio::awaitable<void> run();
  void stop();

  // A serving tunnel of the first host that has one, else null.
  std::shared_ptr<tunnel::tunnel> serving() const;
  // Where a new flow goes: the serving host (the first healthy one in order; an earlier
  // one again only after it has passed its probes for 30 s), its member with the fewest
  // flows; until one is up, the tunnel of the profile it replaced in a reload, so that a
  // reload never leaves a gap.
  std::shared_ptr<tunnel::tunnel> carrier();
  void replaces(const std::shared_ptr<profile>& old);
  bool decided() const { return decided_; }  // its first start has ended, either way
  bool up() const { return serving() != nullptr; }
  bool stopped() const { return ended_; }
  // Out of the routing snapshot after a reload: carries its established flows (and, until
  // `successor` is up, the new flows of its name) until they end or `limit` passes; then it
  // stops, and the flows left are reset.
  boost::asio::awaitable<void> drain(std::chrono::milliseconds limit,
                                     std::weak_ptr<profile> successor = {});
  bool draining() const { return draining_; }
  const std::vector<member>& members() const { return members_; }
  // The host new flows go to: the one they went to last, else the first one up.
  std::optional<std::size_t> serving_host() const;
  std::uint64_t failovers() const { return stats_->failovers; }
  int ssh_pid() const;  // the first member's
  const std::string& control_path() const { return home_.control_path; }
  std::optional<std::chrono::system_clock::time_point> up_since() const;
  // Queries its DNS upstream answered, by rcode name.
  std::map<std::string, std::uint64_t>& dns_answers() { return stats_->dns_answers; }
  const std::vector<nft::endpoint>& bypass() const { return bypass_; }
  const std::string& last_error() const { return last_error_; }
  std::size_t flows() const;
  counters& stats() { return *stats_; }
  const std::shared_ptr<counters>& totals() const { return stats_; }
  void count(const tunnel::flow_result& r);
  // A learned address went for dns.learn_limit: counted, and logged once a minute.
  void evicted(std::size_t limit);
  // A flow ended or a profile came up: a draining profile that is done stops now.
  void poke();

  // The DNS upstream for this profile's domains (null without domains): one pipelined
  // connection per member of the serving host, each query on the least busy one.
  std::shared_ptr<dns::upstream> dns() const { return dns_; }
  bool reading_nameserver() const { return reading_; }

 private:
  // The remote nameserver: configured, or the first of the host's own resolv.conf, read
  // through the master once. Throws std::runtime_error.
  boost::asio::awaitable<boost::asio::ip::tcp::endpoint> nameserver(
      std::shared_ptr<tunnel::tunnel> t);
  boost::asio::awaitable<void> read_nameserver(std::shared_ptr<tunnel::tunnel> t);
  boost::asio::awaitable<void> run_host(std::size_t host);
  boost::asio::awaitable<bool> find_host(std::size_t host);
  // Where hosts[host]'s ssh connects (tunnel::server_endpoints, as this profile's ssh).
  boost::asio::awaitable<std::vector<boost::asio::ip::tcp::endpoint>> servers(
      std::size_t host) const;
  void on_tunnel(std::size_t member, tunnel::state s, const std::string& why);
  void notify(event e);
  void make_dns();
  bool done_draining() const;
  bool host_up(std::size_t host) const;
  std::string member_name(const member& m) const;
  // The tunnels' ssh arguments: with pinned host keys, those options first.
  std::vector<std::string> ssh_args() const;

  boost::asio::any_io_executor ex_;
  config::profile settings_;
  ssh_home home_;
  std::optional<std::chrono::steady_clock::time_point> evicted_logged_;
  observer on_event_;
  std::vector<std::unique_ptr<boost::asio::steady_timer>> retry_;  // by host
  std::vector<member> members_;                                    // host by host, in pool order
  std::vector<bool> located_;                                      // by host
  std::vector<bool> failed_once_;            // by host: its first start failed
  std::vector<nft::endpoint> bypass_;        // every host's ssh servers
  std::optional<std::size_t> serving_host_;  // where new flows went last
  std::string last_error_;
  bool decided_ = false, stopping_ = false, ended_ = false;
  bool draining_ = false;
  boost::asio::steady_timer drained_;  // cancelled when a draining profile's last flow ends
  std::shared_ptr<counters> stats_;
  std::weak_ptr<profile> predecessor_, successor_;
  std::shared_ptr<dns::upstream> dns_;
  std::optional<boost::asio::ip::tcp::endpoint> nameserver_;
  bool reading_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace tprosshy::runtime
