#pragma once
// One profile at run time, known by its name: where its ssh server is (for the bypass
// rules), its tunnel, its first verdict and last error, its DNS upstream and remote
// nameserver, and its counters. The runtime owns it; nothing else keeps its state.
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <functional>
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
  std::uint64_t restarts = 0;  // ssh exits after the tunnel had been up
};

class profile {
 public:
  enum class event { bypass, up, down, nameserver };
  using observer = std::function<void(profile&, event)>;

  profile(boost::asio::any_io_executor ex, config::profile settings, std::string control_path,
          observer on_event);
  ~profile();
  profile(const profile&) = delete;
  profile& operator=(const profile&) = delete;

  const std::string& name() const { return settings_.name; }
  const config::profile& settings() const { return settings_; }

  // Finds the ssh server (`ssh -G` and a lookup, retried with the tunnel's backoff until
  // they work), then runs the tunnel, until stop(). Spawn it once.
  boost::asio::awaitable<void> run();
  void stop();

  std::shared_ptr<tunnel::tunnel> serving() const;  // the tunnel while it is up, else null
  bool decided() const { return decided_; }         // its first start has ended, either way
  bool up() const { return serving() != nullptr; }
  bool stopped() const { return ended_; }
  const std::vector<nft::endpoint>& bypass() const { return bypass_; }
  const std::string& last_error() const { return last_error_; }
  std::size_t flows() const;
  counters& stats() { return stats_; }
  void count(const tunnel::flow_result& r);

  // The DNS upstream for this profile's domains (null without domains), and whether its
  // remote nameserver is being read right now.
  std::shared_ptr<dns::upstream> dns() const { return dns_; }
  bool reading_nameserver() const { return reading_; }

 private:
  // The remote nameserver: configured, or the first of the host's own resolv.conf, read
  // through the master once. Throws std::runtime_error.
  boost::asio::awaitable<boost::asio::ip::tcp::endpoint> nameserver(
      std::shared_ptr<tunnel::tunnel> t);
  boost::asio::awaitable<void> read_nameserver(std::shared_ptr<tunnel::tunnel> t);
  void on_tunnel(tunnel::state s, const std::string& why);
  void notify(event e);

  boost::asio::any_io_executor ex_;
  config::profile settings_;
  std::string control_path_;
  observer on_event_;
  boost::asio::steady_timer retry_;
  std::shared_ptr<tunnel::tunnel> tunnel_;
  std::vector<nft::endpoint> bypass_;
  std::string last_error_;
  bool decided_ = false, stopping_ = false, ended_ = false, was_up_ = false;
  counters stats_;
  std::shared_ptr<dns::tcp_upstream> dns_;
  std::optional<boost::asio::ip::tcp::endpoint> nameserver_;
  bool reading_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace tprosshy::runtime
