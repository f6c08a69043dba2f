#pragma once
// The DNS side of a run: the dns::server, one pipelined upstream per profile with domains
// (a channel through the profile's own ssh master), the local upstream, and the remote
// nameserver found by reading the host's /etc/resolv.conf through that master.
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "config/config.hpp"
#include "tunnel/tunnel.hpp"

namespace tprosshy::app {

class dns_front {
 public:
  // A profile's tunnel while it is up, else null.
  using tunnel_fn = std::function<std::shared_ptr<tunnel::tunnel>(std::size_t)>;
  using learn_fn = std::function<void(std::size_t, const net::address&, std::uint32_t)>;

  // Null when no enabled profile has DNS domains: then nothing is captured.
  static std::unique_ptr<dns_front> make(boost::asio::any_io_executor ex, const config::config& cfg,
                                         const std::vector<boost::asio::ip::address>& listen,
                                         tunnel_fn tunnel, learn_fn learn);
  ~dns_front();

  // A profile's tunnel came up: a `nameserver: auto` profile reads its remote nameserver.
  void tunnel_up(std::size_t id);
  // Completes once every nameserver being read is known (or failed), so that "ready" means
  // DNS answers too; at most `limit`.
  boost::asio::awaitable<void> discovered(std::chrono::milliseconds limit);
  std::uint16_t port() const;
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

}  // namespace tprosshy::app
