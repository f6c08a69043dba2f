#pragma once
// The DNS side of a run: the dns::server, one pipelined upstream per profile with domains
// (reached through the profile's own SOCKS tunnel), the local upstream, and the remote
// nameserver found by reading the host's /etc/resolv.conf.
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

namespace tprosshy::app {

class dns_front {
 public:
  // The SOCKS endpoint of a profile's tunnel while it is up.
  using socks_fn = std::function<std::optional<boost::asio::ip::tcp::endpoint>(std::size_t)>;
  using learn_fn = std::function<void(std::size_t, const net::address&, std::uint32_t)>;

  // Null when no enabled profile has DNS domains: then nothing is captured.
  static std::unique_ptr<dns_front> make(boost::asio::any_io_executor ex, const config::config& cfg,
                                         const std::vector<boost::asio::ip::address>& listen,
                                         socks_fn socks, learn_fn learn);
  ~dns_front();

  // Completes once every `nameserver: auto` profile knows its remote nameserver (or failed
  // to learn it), so that "ready" means DNS answers too; at most `limit`.
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
