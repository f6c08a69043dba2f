#pragma once
// The transparent TCP front: accepts redirected flows, finds each one's original
// destination, asks the router which tunnel carries it, and hands the flow to that
// tunnel's ssh.
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tunnel/tunnel.hpp"

namespace tprosshy::proxy {

using tcp = boost::asio::ip::tcp;

struct route {
  std::string profile;  // for the log
  std::shared_ptr<tunnel::tunnel> tunnel;
};

// Called once per accepted flow with its original destination. nullopt: no profile takes
// it, or its tunnel is down; the client is reset at once.
using router = std::function<std::optional<route>(const tcp::endpoint& original)>;

// Called when a flow ends, with what it carried.
using flow_done = std::function<void(const route&, const tunnel::flow_result&)>;

class server {
 public:
  // Binds and listens on each endpoint (port 0: the first one picks a free port and the
  // others reuse it). Throws boost::system::system_error.
  server(boost::asio::any_io_executor ex, const std::vector<tcp::endpoint>& listen, router r,
         flow_done done = {});
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  std::vector<tcp::endpoint> local_endpoints() const;
  uint16_t port() const;
  void start();  // spawns the accept loops
  void stop();   // stops accepting; open flows go on until they end
  std::size_t active_flows() const;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace tprosshy::proxy
